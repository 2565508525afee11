"""Markdown table of one GPU call's training throughput: dtrn bench (bench.jsonl) beside the PyTorch peers
(peers.jsonl), both written by bench/gpu_suite.sh (stages bench and peers) in the same call.

    python3 bench/training_table.py OUT_DIR
"""
import json
import sys


def rows(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.startswith("{")]
    except FileNotFoundError:
        return []


def main(out):
    dtrn = rows(f"{out}/bench.jsonl")
    peers = rows(f"{out}/peers.jsonl")
    print("| seq x batch | program | tokens/s | step ms | MFU | peak GiB | routed f (mean) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    table = {}
    for r in dtrn:
        kind = "dense" if set(r["layout"]) == {"T"} else "bilayer"
        f = [layer["f"] for layer in r["layers"]]
        key = (r["seq"], f"dtrn {kind}")
        table[key] = r["tok_s"]
        print(f"| {r['seq']} x {r['batch']} | dtrn {kind} | {r['tok_s'] / 1e3:.1f}k | {r['step_ms']:.1f} | "
              f"{100 * r['mfu']:.1f}% | {r['peak_mem_GiB']:.1f} | {f'{sum(f) / len(f):.3f}' if f else '-'} |")
    for r in peers:
        if "error" in r:
            print(f"| {r.get('seq')} | peer error | {r['error'][:60]} | | | | |")
            continue
        if "shape" in r:
            name = f"torch_dense {'compile' if r['compile'] else 'eager'}"
            mfu = f"{100 * r['mfu_vs_989']:.1f}%"
            mem, frac = r["max_mem_GiB"], "-"
        else:
            name = f"torch_dtrnet {r['model']}"
            mfu, mem = "-", r["max_mem_GiB"]
            frac = f"{r['measured_r']:.3f}" if r.get("measured_r") is not None else "-"
        table[(r["seq"], name)] = r["tok_s"]
        print(f"| {r['seq']} x {r['micro_bs']} | {name} | {r['tok_s'] / 1e3:.1f}k | {r['step_ms']:.1f} | {mfu} | "
              f"{mem:.1f} | {frac} |")
    print()
    print("| seq | ratio | value |")
    print("| --- | --- | ---: |")
    for seq in sorted({k[0] for k in table}):
        def get(name):
            return table.get((seq, name))
        dense, bilayer = get("dtrn dense"), get("dtrn bilayer")
        best_peer = max([v for v in (get("torch_dense compile"), get("torch_dense eager")) if v] or [0])
        if dense and best_peer:
            print(f"| {seq} | dtrn dense / faster torch_dense | {dense / best_peer:.2f}x |")
        if dense and bilayer:
            print(f"| {seq} | dtrn bilayer / dtrn dense | {bilayer / dense:.2f}x |")
        if bilayer and get("torch_dtrnet dtrnet-bilayer"):
            print(f"| {seq} | dtrn bilayer / torch_dtrnet bilayer | {bilayer / get('torch_dtrnet dtrnet-bilayer'):.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu-out")
