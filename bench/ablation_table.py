#!/usr/bin/env python3
"""The table of bench/routing_ablation.sh: one row per run directory under OUTDIR, from its metrics.jsonl.

usage: ablation_table.py OUTDIR RUN...
"""
import json
import sys

outdir, runs = sys.argv[1], sys.argv[2:]
print("| run | val loss | val ppl | routed fraction f per D layer (last 50 steps) | starved layer-steps | fallback layer-steps |")
print("| --- | --- | --- | --- | --- | --- |")
for name in runs:
    try:
        lines = [json.loads(l) for l in open(f"{outdir}/{name}/metrics.jsonl")]
    except OSError:
        print(f"| {name} | failed | | | | |")
        continue
    train = [l for l in lines if l["kind"] == "train"]
    val = [l for l in lines if l["kind"] == "val"]
    tail = train[-50:]
    layers = sorted({x["layer"] for l in tail for x in l["layers"]})
    fs = " ".join(
        f"L{k}:{sum(x['f'] for l in tail for x in l['layers'] if x['layer'] == k) / len(tail):.3f}"
        for k in layers) or "-"
    starved = sum(1 for l in train for x in l["layers"] if x["starved"])
    fallback = sum(1 for l in train for x in l["layers"] if x["fallback"])
    v = val[-1] if val else {"loss": float("nan"), "ppl": float("nan")}
    print(f"| {name} | {v['loss']:.4f} | {v['ppl']:.1f} | {fs} | {starved} | {fallback} |")
