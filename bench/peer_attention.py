#!/usr/bin/env python3
"""The peer of bench/attention_bench.cc: torch's scaled_dot_product_attention (is_causal=True) at the same
causal bf16 shapes, timed the same way (CUDA events, median of 20 after 3 warm-ups) and counted the same
way (forward 4 N T H D / 2 over the causal half, N = B T; backward 2.5x; forward + backward 3.5x).

q, k, v are made as [B, T, heads, D] (dtrn's packed layout) and viewed as [B, heads, T, D]. Grouped
shapes run twice: with enable_gqa=True, and with K and V expanded to H heads beforehand (outside the
timing), which is the work an MHA kernel does and lets torch pick its flash kernel whatever its GQA
support.
"""
import torch
import torch.nn.functional as F

WARMUP, RUNS = 3, 20
cases = [  # B, T, H, G, D
    (8, 2048, 15, 5, 64),
    (2, 8192, 15, 5, 64),
    (8, 2048, 16, 16, 128),
    (2, 8192, 16, 16, 128),
]


def median_ms(fn):
    times = []
    for i in range(WARMUP + RUNS):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        if i >= WARMUP:
            times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def run(b, t, h, g, d, expand):
    def draw(heads):
        x = torch.rand((b, t, heads, d), device="cuda", dtype=torch.bfloat16) * 2 - 1
        return x.transpose(1, 2)

    q, k, v = draw(h), draw(g), draw(g)
    if expand and g != h:
        k = k.repeat_interleave(h // g, dim=1)
        v = v.repeat_interleave(h // g, dim=1)
    gqa = not expand and g != h
    for x in (q, k, v):
        x.requires_grad_(True)
    dout = torch.rand_like(q) * 2 - 1

    extra = {"enable_gqa": True} if gqa else {}

    def forward():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)

    def forward_backward():
        forward().backward(dout)

    with torch.no_grad():
        fwd = median_ms(forward)
    both = median_ms(forward_backward)
    bwd = both - fwd
    flop = 4.0 * b * t * t * h * d / 2
    label = "enable_gqa" if gqa else ("K/V expanded" if g != h else "MHA")
    print(f"bf16 {b:2d} x {t:5d}  H {h:2d} G {g:2d} D {d:3d}  {label:12s} | {fwd:8.3f} "
          f"{flop / fwd / 1e9:6.1f} | {bwd:8.3f} {2.5 * flop / bwd / 1e9:6.1f} | {both:8.3f} "
          f"{3.5 * flop / both / 1e9:6.1f}")


print(f"peer torch {torch.__version__} scaled_dot_product_attention on {torch.cuda.get_device_name()}, "
      f"causal, median of {RUNS} runs (bwd = f+b - fwd)")
print(f"{'case':50s} | {'fwd ms  TFLOP/s':>15s} | {'bwd ms  TFLOP/s':>15s} | {'f+b ms  TFLOP/s':>15s}")
for b, t, h, g, d in cases:
    try:
        run(b, t, h, g, d, expand=False)
    except TypeError as e:  # enable_gqa arrived in torch 2.5
        print(f"bf16 {b:2d} x {t:5d}  H {h:2d} G {g:2d} D {d:3d}  enable_gqa unsupported here: {e}")
    if g != h:
        run(b, t, h, g, d, expand=True)
