"""Reads a run back and plots it to a PNG (matplotlib, if installed).

    python3 examples/plot.py --addr 127.0.0.1:7390 --project demo/llm \
        --run demo-1 --out run.png

Prints a summary per series either way: the raw loss of every rank
(Query.ReadRange) and a 50-bucket chart of GPU utilisation
(Query.ReadDownsampled) with min/max bands.
"""
import argparse

import _path  # noqa: F401
import stepdb


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7390")
    p.add_argument("--project", default="demo/llm")
    p.add_argument("--run", required=True)
    p.add_argument("--out", default="run.png")
    a = p.parse_args()
    c = stepdb.Client(a.addr)
    series = c.list_series(a.project, run=a.run)
    if not series:
        raise SystemExit(f"no series in {a.project}/{a.run}")
    for s in sorted(series, key=lambda s: (s["metric"], sorted(s["labels"].items()))):
        print(f"{s['metric']:22} {s['labels']}  points={s['points']} "
              f"steps {s['first_step']}..{s['last_step']} last={s['last_value']:.4g}")
    losses = {s["labels"].get("rank", ""): c.read(a.project, a.run, "train/loss",
                                                  s["labels"], format="list")
              for s in series if s["metric"] == "train/loss"}
    util = {s["labels"].get("rank", ""): c.read_downsampled(
        a.project, a.run, "gpu/util", s["labels"], buckets=50)
        for s in series if s["metric"] == "gpu/util"}
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (apt-get install "
              "python3-matplotlib)")
        return
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for rank, pts in sorted(losses.items()):
        ax1.plot(pts.steps, pts.values, label=f"rank {rank}", lw=0.8)
    ax1.set_ylabel("train/loss")
    ax1.legend()
    for rank, buckets in sorted(util.items()):
        mid = [(b["start"] + b["end"]) / 2 for b in buckets]
        ax2.plot(mid, [b["sum"] / max(1, b["count"]) for b in buckets],
                 label=f"rank {rank}")
        ax2.fill_between(mid, [b["min"] for b in buckets],
                         [b["max"] for b in buckets], alpha=0.15)
    ax2.set_ylabel("gpu/util (mean, min-max)")
    ax2.set_xlabel("step")
    fig.suptitle(f"{a.project}/{a.run}")
    fig.savefig(a.out, dpi=100)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
