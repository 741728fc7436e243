"""stepdb: the Python client of the stepdb metrics store.

    import stepdb
    with stepdb.init_run(project="team/llm", params={"lr": 3e-4}) as run:
        for step in range(1000):
            run.log_metrics({"train/loss": loss, "train/lr": lr}, step=step)

See clients/python/README.md.
"""
from .query import Client, Points, run_to_dict
from .run import Run, RunError, default_labels, fork_run, init_run
from .sync import sync

__all__ = ["Client", "Points", "Run", "RunError", "default_labels",
           "fork_run", "init_run", "run_to_dict", "sync"]
__version__ = "0.1.0"
