"""A pure-Python "training job": several simulated ranks (threads, or
processes with --processes) each log per-step training metrics and fake
GPU statistics to one run.

    python3 examples/train.py --addr 127.0.0.1:7390 --project demo/llm \
        --run demo-1 --ranks 4 --steps 500

Every rank calls init_run with the same run id (a real job would set
STEPDB_RUN_ID or pass the id) and its own labels; rank 0 also logs the
hyperparameters. Then read it back with examples/plot.py.
"""
import argparse
import math
import multiprocessing
import random
import threading
import time

import _path  # noqa: F401
import stepdb


def rank_main(rank, args):
    labels = {"rank": str(rank), "node": f"node{rank // args.gpus_per_node}",
              "gpu": str(rank % args.gpus_per_node)}
    params = {"lr": args.lr, "batch_size": 32 * args.ranks, "model": "toy-llm",
              "ranks": args.ranks}
    rng = random.Random(rank)
    with stepdb.init_run(project=args.project, run_id=args.run, addr=args.addr,
                         labels=labels, params=params if rank == 0 else None,
                         tags=["example"], mode=args.mode) as run:
        for step in range(args.steps):
            # cosine schedule with warmup, a loss that decays with noise
            warm = min(1.0, (step + 1) / 50)
            lr = args.lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            loss = 3.0 * math.exp(-step / (args.steps / 3)) + 0.3 + \
                rng.gauss(0, 0.05)
            if args.nan_at is not None and step == args.nan_at and rank == 0:
                loss = float("nan")  # the most important point of the run
            run.log_metrics({
                "train/loss": loss,
                "train/lr": lr,
                "train/grad_norm": abs(rng.gauss(1.0, 0.3)),
                "train/tokens_per_s": 50_000 + rng.gauss(0, 2000),
                "gpu/util": min(100.0, 90 + rng.gauss(0, 5)),
                "gpu/mem_gb": 61.5 + rng.random(),
                "gpu/temp_c": 65 + 10 * warm + rng.gauss(0, 1),
                "gpu/power_w": 550 + rng.gauss(0, 20),
            }, step=step)
            if step % 100 == 99:
                run.log_metrics({"eval/loss": loss + 0.1}, step=step)
            if args.step_time:
                time.sleep(args.step_time)
        if rank == 0:
            run.log_params({"final_loss": loss})
    stats = run.stats  # after close: everything uploaded
    print(f"rank {rank}: {args.steps} steps, {stats}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:7390")
    p.add_argument("--project", default="demo/llm")
    p.add_argument("--run", default=None, help="run id (default: generated)")
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=2)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--step-time", type=float, default=0.0,
                   help="seconds of fake work per step")
    p.add_argument("--nan-at", type=int, default=None,
                   help="rank 0's loss goes NaN at this step")
    p.add_argument("--mode", default="online", choices=["online", "offline"])
    p.add_argument("--processes", action="store_true",
                   help="one process per rank instead of one thread")
    args = p.parse_args()
    if args.run is None:
        args.run = time.strftime("demo-%Y%m%d-%H%M%S")
    kind = multiprocessing.Process if args.processes else threading.Thread
    workers = [kind(target=rank_main, args=(r, args)) for r in range(args.ranks)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"run {args.project}/{args.run}: read it with\n  python3 "
          f"examples/plot.py --addr {args.addr} --project {args.project} "
          f"--run {args.run}")


if __name__ == "__main__":
    main()
