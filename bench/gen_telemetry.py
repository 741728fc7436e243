#!/usr/bin/env python3
"""Deterministic training telemetry in InfluxDB line protocol, for import
benchmarks (bytes per point on disk): per rank and step one `train` line
(loss, lr, grad_norm as float32 widened to float64 as `.item()` yields them;
tokens_per_s a computed float64) and one `gpu` line (util and temp integers,
mem_bytes mostly constant, power_w with one decimal). Steps are consecutive,
times every ~500 ms with +-20 ms jitter per rank; the metrics of one line
share step and time, as one logging call does.

    bench/gen_telemetry.py --ranks 8 --steps 20000 --seed 1 > telemetry.lp
"""
import argparse
import math
import random
import struct
import sys


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=8)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--run", default="r1")
    a = p.parse_args()
    rng = random.Random(a.seed)
    out = sys.stdout
    base_ns = 1_700_000_000_000 * 1_000_000
    mem = [71_303_168_000 + 1_048_576 * r for r in range(a.ranks)]
    for s in range(a.steps):
        for r in range(a.ranks):
            t_ms = 1_700_000_000_000 + 500 * s + rng.randint(-20, 20)
            t_ns = t_ms * 1_000_000
            loss = f32(2.5 * math.exp(-s / 8000) + 0.05 * rng.gauss(0, 1))
            lr = f32(3e-4 * min(1.0, s / 1000) * (0.5 + 0.5 * math.cos(math.pi * s / a.steps)))
            gn = f32(1.0 + 0.3 * abs(rng.gauss(0, 1)))
            tps = 4096 * 8 / (0.5 + 0.01 * rng.gauss(0, 1))
            out.write(f"train,run={a.run},rank={r} loss={loss!r},lr={lr!r},"
                      f"grad_norm={gn!r},tokens_per_s={tps!r},step={s}i {t_ns}\n")
            if s % 500 == 0:
                mem[r] += 1_048_576 * rng.choice((-1, 0, 1))
            util = max(0, min(100, round(95 + 4 * rng.gauss(0, 1))))
            temp = round(70 + 2 * rng.gauss(0, 1))
            power = round(650 + 20 * rng.gauss(0, 1), 1)
            out.write(f"gpu,run={a.run},rank={r} util={util}i,temp={temp}i,"
                      f"mem_bytes={mem[r]}i,power_w={power!r},step={s}i {t_ns}\n")


if __name__ == "__main__":
    main()
