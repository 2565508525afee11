#!/usr/bin/env python3
"""The peer of bench/gemm_bench.cc: torch.matmul (cuBLAS through PyTorch) at the same products, timed
the same way (CUDA events, median of 20 after 3 warm-ups, 2 M N K flops), so the two tables sit side by
side in one call on the GPU machine. fp32 runs with TF32 off, as dtrn's f32 path computes in full fp32.
"""
import torch

torch.backends.cuda.matmul.allow_tf32 = False
cases = [  # name, M, N, K, transpose a (stored K x M), transpose b (stored N x K), dtype
    ("square 4096^3 bf16", 4096, 4096, 4096, False, False, torch.bfloat16),
    ("square 4096^3 f32 (no TF32)", 4096, 4096, 4096, False, False, torch.float32),
    ("360M qkv proj   x W^T", 16384, 1600, 960, False, True, torch.bfloat16),
    ("360M attn out   x W^T", 16384, 960, 960, False, True, torch.bfloat16),
    ("360M gate/up    x W^T", 16384, 2560, 960, False, True, torch.bfloat16),
    ("360M down       x W^T", 16384, 960, 2560, False, True, torch.bfloat16),
    ("360M lm head    x W^T", 16384, 49152, 960, False, True, torch.bfloat16),
    ("360M lm head dX = dY W", 16384, 960, 49152, False, False, torch.bfloat16),
    ("360M lm head dW = dY^T X", 49152, 960, 16384, True, False, torch.bfloat16),
]
print(f"peer torch {torch.__version__} on {torch.cuda.get_device_name()}, median of 20 runs")
print(f"{'product':34s} {'M':>8s} {'N':>8s} {'K':>8s} {'ms':>10s} {'TFLOP/s':>10s}")
for name, m, n, k, ta, tb, dt in cases:
    a = torch.rand((k, m) if ta else (m, k), device="cuda", dtype=dt) * 2 - 1
    b = torch.rand((n, k) if tb else (k, n), device="cuda", dtype=dt) * 2 - 1
    aa = a.t() if ta else a
    bb = b.t() if tb else b
    times = []
    for i in range(23):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.matmul(aa, bb)
        e.record()
        e.synchronize()
        if i >= 3:
            times.append(s.elapsed_time(e))
    ms = sorted(times)[len(times) // 2]
    print(f"{name:34s} {m:8d} {n:8d} {k:8d} {ms:10.3f} {2 * m * n * k / ms / 1e9:10.1f}")
