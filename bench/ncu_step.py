#!/usr/bin/env python3
"""Sums the kernel times of the last whole training step in an ncu CSV (bench/ncu_step.sh). A step ends
with the optimizer's `adamw_chunks` kernel; the last step is the kernels after the second-to-last one.

Usage: ncu_step.py NCU.csv [SEQUENCE.txt]
With SEQUENCE.txt, the last step's kernels are also written there one a line, in launch order (index,
microseconds, grid size where the CSV has launch__grid_size, name): where each product of a step goes.
"""
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = name.replace("(anonymous namespace)", "")
    name = re.sub(r"\(.*", "", name)          # drop the argument list
    name = name.replace("::::", "::")
    return name.replace("void ", "").strip()


def main(path, sequence=None):
    launches = {}  # ncu's launch ID -> [name, ns, grid size]
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for row in csv.DictReader(lines):
        launch = launches.setdefault(int(row["ID"]), [row["Kernel Name"], 0.0, "-"])
        if row.get("Metric Name") == "gpu__time_duration.sum":
            launch[1] = float(row["Metric Value"].replace(",", ""))
        elif row.get("Metric Name") == "launch__grid_size":
            launch[2] = row["Metric Value"].replace(",", "")
    kernels = [(name, t) for name, t, _ in (launches[k] for k in sorted(launches))]
    grids = [g for _, _, g in (launches[k] for k in sorted(launches))]
    ends = [i for i, (name, _) in enumerate(kernels) if "adamw_chunks" in name]
    if len(ends) < 2:
        print(f"{len(kernels)} kernels, {len(ends)} optimizer steps: no whole step to sum")
        return
    step = kernels[ends[-2] + 1: ends[-1] + 1]
    if sequence:
        with open(sequence, "w") as out:
            for i, (name, t) in enumerate(step):
                out.write(f"{i}\t{t / 1e3:.1f}\t{grids[ends[-2] + 1 + i]}\t{short(name)[:100]}\n")
    total = sum(t for _, t in step)
    by = defaultdict(lambda: [0.0, 0])
    for name, t in step:
        by[short(name)][0] += t
        by[short(name)][1] += 1
    print(f"last step: {len(step)} kernels, {total / 1e6:.2f} ms of kernel time")
    print("ms, share, count, kernel")
    for name, (t, n) in sorted(by.items(), key=lambda kv: -kv[1][0]):
        print(f"{t / 1e6:8.3f} {100 * t / total:5.1f}% {n:5d}  {name[:120]}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
