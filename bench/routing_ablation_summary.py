#!/usr/bin/env python3
"""The table and plots of bench/routing_ablation.sh, from each run's metrics.jsonl.

usage: routing_ablation_summary.py OUTDIR RUN...

Runs are named SIZE-SETTING-sSEED. Writes OUTDIR/summary.md: one row per run, then one row per
(size, setting) over its seeds, with
  - the final validation loss and its gap to the dense run of the same size and seed (percent);
  - per D layer, the mean routed fraction f over the second half of training;
  - the share of (step, D layer) pairs of the second half with f in [0.08, 0.12] (on target) and outside
    [0.05, 0.2] (off target);
  - starved, saturated, fallback and collapsed (step, D layer) counts over the second half;
and OUTDIR/f-SIZE-SETTING.png (matplotlib) or .svg (written by hand where matplotlib is missing): f per
D layer over the steps, one line per layer and seed, the target band shaded.
"""
import json
import os
import sys
from collections import defaultdict

TARGET = (0.08, 0.12)
ALLOWED = (0.05, 0.2)


def load(outdir, name):
    try:
        with open(os.path.join(outdir, name, "metrics.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return None
    train = [l for l in lines if l.get("kind") == "train"]
    val = [l for l in lines if l.get("kind") == "val"]
    return {"train": train, "val": val[-1]["loss"] if val else None} if train else None


def split_name(name):
    size, rest = name.split("-", 1)
    setting, seed = rest.rsplit("-s", 1)
    return size, setting, seed


def routing_stats(train):
    half = train[len(train) // 2:]
    per_layer = defaultdict(list)
    counts = {"on": 0, "off": 0, "pairs": 0, "starved": 0, "saturated": 0, "fallback": 0, "collapsed": 0}
    for line in half:
        for l in line["layers"]:
            f = l["f"]
            per_layer[l["layer"]].append(f)
            counts["pairs"] += 1
            counts["on"] += TARGET[0] <= f <= TARGET[1]
            counts["off"] += not (ALLOWED[0] <= f <= ALLOWED[1])
            counts["starved"] += bool(l.get("starved"))
            counts["saturated"] += bool(l.get("saturated"))
            counts["fallback"] += bool(l.get("fallback"))
            counts["collapsed"] += bool(l.get("collapsed"))
    means = {k: sum(v) / len(v) for k, v in sorted(per_layer.items())}
    return means, counts


def fmt_loss(x):
    return "-" if x is None else f"{x:.4f}"


def fmt_gap(x, dense):
    return "-" if x is None or dense is None else f"{100 * (x - dense) / dense:+.2f}%"


def share(counts, key):
    return "-" if counts["pairs"] == 0 else f"{100 * counts[key] / counts['pairs']:.0f}%"


def svg_plot(path, title, series, steps_max):
    w, h, pad = 640, 320, 40
    sx = lambda s: pad + (w - 2 * pad) * s / max(1, steps_max)
    sy = lambda f: h - pad - (h - 2 * pad) * min(1.0, max(0.0, f)) / 0.5  # f axis 0..0.5
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect x="{pad}" y="{sy(TARGET[1]):.1f}" width="{w - 2 * pad}" height="{sy(TARGET[0]) - sy(TARGET[1]):.1f}" fill="#dfd"/>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           f'<text x="{w / 2}" y="16" text-anchor="middle">{title}</text>',
           f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">step</text>']
    for f in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        out.append(f'<text x="{pad - 4}" y="{sy(f) + 4:.1f}" text-anchor="end">{f:.1f}</text>')
    for i, (label, xs, ys) in enumerate(series):
        pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        c = colors[i % len(colors)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1" points="{pts}"/>')
        out.append(f'<text x="{w - pad + 2}" y="{pad + 12 * i}" fill="{c}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return os.path.basename(path)


def plot(outdir, size, setting, runs):
    series = []
    steps_max = 0
    for seed, train in runs:
        layers = sorted({l["layer"] for line in train for l in line["layers"]})
        for k in layers:
            xs = [line["step"] for line in train]
            ys = [next(l["f"] for l in line["layers"] if l["layer"] == k) for line in train]
            series.append((f"L{k} s{seed}", xs, ys))
            steps_max = max(steps_max, xs[-1])
    if not series:
        return None
    title = f"{size} {setting}: routed fraction f per D layer (band: {TARGET[0]}-{TARGET[1]})"
    base = os.path.join(outdir, f"f-{size}-{setting}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return svg_plot(base + ".svg", title, series, steps_max)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.axhspan(*TARGET, color="#dfd")
    for label, xs, ys in series:
        ax.plot(xs, ys, linewidth=0.8, label=label)
    ax.set_ylim(0, 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("f")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(base + ".png", dpi=110)
    plt.close(fig)
    return os.path.basename(base + ".png")


def main():
    outdir, names = sys.argv[1], sys.argv[2:]
    runs = {n: load(outdir, n) for n in names}
    dense = {}
    for n, r in runs.items():
        size, setting, seed = split_name(n)
        if setting == "dense" and r:
            dense[(size, seed)] = r["val"]
    lines = ["# Routing ablation", "",
             f"Second half of training: f on target = in [{TARGET[0]}, {TARGET[1]}], off target = outside "
             f"[{ALLOWED[0]}, {ALLOWED[1]}]; counts are (step, D layer) pairs.", "",
             "| run | val loss | vs dense | mean f per D layer | on target | off target | starved | saturated | fallback | collapsed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = defaultdict(list)
    for n in names:
        r = runs[n]
        size, setting, seed = split_name(n)
        if r is None:
            lines.append(f"| {n} | missing | | | | | | | | |")
            continue
        means, c = routing_stats(r["train"])
        groups[(size, setting)].append((seed, r, means, c))
        fs = " ".join(f"L{k}:{v:.3f}" for k, v in means.items()) or "-"
        lines.append(f"| {n} | {fmt_loss(r['val'])} | {fmt_gap(r['val'], dense.get((size, seed)))} | {fs} | "
                     f"{share(c, 'on')} | {share(c, 'off')} | {c['starved']} | {c['saturated']} | {c['fallback']} | "
                     f"{c['collapsed']} |")
    lines += ["", "Over seeds (mean validation loss and mean gap to dense; counts summed):", "",
              "| size | setting | seeds | val loss | vs dense | on target | off target | starved | fallback | plot |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (size, setting), members in groups.items():
        vals = [r["val"] for _, r, _, _ in members if r["val"] is not None]
        gaps = [100 * (r["val"] - dense[(size, s)]) / dense[(size, s)] for s, r, _, _ in members
                if r["val"] is not None and dense.get((size, s))]
        total = defaultdict(int)
        for _, _, _, c in members:
            for k, v in c.items():
                total[k] += v
        picture = plot(outdir, size, setting, [(s, r["train"]) for s, r, _, _ in members])
        lines.append(f"| {size} | {setting} | {len(members)} | "
                     f"{fmt_loss(sum(vals) / len(vals) if vals else None)} | "
                     f"{f'{sum(gaps) / len(gaps):+.2f}%' if gaps else '-'} | {share(total, 'on')} | {share(total, 'off')} | "
                     f"{total['starved']} | {total['fallback']} | {f'![]({picture})' if picture else '-'} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
