// Launchers of the CUDA attention kernels (ops.h: attention; cpu/attention.cc is the specification).
// Shape letters: N packed rows, H query heads, G key/value heads (query head h reads KV head h / (H/G)),
// D head dim, S sequences. q, out, dout, dq are [N, H, D]; k, v, dk, dv are [N, G, D]; cu_seqlens i32
// [S+1] on the device; lse and delta are [H, N] of the statistics type (f32 for f32 and bf16 elements,
// f64 for f64). All contiguous device pointers; every launch is queued on `stream`.
//
// Note [Attention grids without host synchronisation]
// The offsets stay on the device: no launcher reads them. Each grid is an upper bound on the tiles of
// all sequences, sum_s ceil(len_s / R) <= ceil(N / R) + S for tiles of R rows, and each block finds its
// (sequence, tile) by a block-wide prefix sum over the ceil(len_s / R) read from cu_seqlens; surplus
// blocks exit at once. Within a sequence, the blocks with the most causal work start first. Offsets are
// clamped into [0, N] and made non-decreasing on the device, so invalid offsets never reach memory
// outside the tensors (the op layer validates offsets that live on the host; on the device it cannot
// without a synchronisation, and rows outside the clamped sequences are then left unwritten).
//
// Three implementations sit behind the same launchers:
//   generic      tiled flash attention with FMA arithmetic (f32 accumulation, f64 for f64), any D <= 256,
//                every element type (attention_generic.cuh, in attention_forward.cu and
//                attention_backward.cu). The f32 training path and the correctness anchor.
//   tensor core  bf16 with D = 64 or 128, 16-byte aligned pointers: FlashAttention-2 on mma.sync m16n8k16
//                bf16 -> f32 with ldmatrix and cp.async double buffering (attention_tc_*.cu).
//   wgmma        where the tensor cores apply and the device runs sm_90a code (wgmma_support.h): the
//                same algorithms on Hopper's warpgroup MMA, operands in swizzled shared memory,
//                warp-specialized (a producer warpgroup loads, two consumer warpgroups compute)
//                (attention_wgmma_forward.cu, and the split backward in attention_wgmma_backward.cu),
//                each chosen on its own; every forward's lse feeds every backward.
// The backward of all is deterministic (no float atomics; every float sum in a fixed order): a preprocess
// delta = rowsum(dout * out), then one kernel per (KV head, key tile) writing dk and dv, summing over
// the H/G query heads of its group in order and, within each, over the query tiles in order, and one
// per (query head, query tile) writing dq. Both reuse the forward's lse; neither recomputes it. The
// tensor cores also have a fused backward: the dk/dv kernel adds each query tile's dq in KV-tile order
// through f32 sums and per-tile counters in a workspace (attention_tc_backward.cu), 5 matrix products
// per tile pair instead of 7; and so has wgmma at D = 64, adding dq's pieces as 32-bit integers in
// whatever order they come (integer sums commute; Note [Deterministic dq in fixed point] in
// attention_dq_sums.cuh).
//
// Environment: DTRN_ATTENTION_KERNEL=generic forces the generic kernels for bf16 too (A/B checks);
// "wgmma" runs the forward on the wgmma kernel where it applies (the tensor cores elsewhere); unset,
// empty or "auto" picks the tensor cores where they apply.
// DTRN_ATTENTION_BACKWARD=fused runs the fused tensor-core backward, "wgmma" the split backward on the
// wgmma kernels where they run (the mma.sync split kernels elsewhere), "wgmma-fused" the fused wgmma
// backward (Note [Deterministic dq in fixed point]) where it runs (D = 64 on sm_90a; elsewhere, D = 128
// included, the mma.sync split kernels as "split" does: "wgmma" or auto pick the split wgmma ones);
// "split" the two mma.sync kernels; unset, empty or "auto" as AttentionBackward::kAuto says.
// cuda_backend_attention.cc reads both on every call and passes the choices in.
//
// C++17 and free of dtrn's Tensor, like elementwise.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/elementwise.h"

namespace dtrn::cuda {

// kAuto: the Hopper wgmma kernels where the GPU runs them and they measured faster (the backward always;
// the forward for sequences of 2048 rows or more on average, kWgmmaForwardMinRows), else the mma.sync
// tensor-core kernels (kMma); kGeneric: the generic kernels.
enum class AttentionKernel : uint8_t { kAuto, kMma, kGeneric, kWgmma };
// kAuto: the fused wgmma backward at D = 64 where the GPU runs the wgmma kernels, the split wgmma
// backward at D = 128 there, else the split mma.sync one.
enum class AttentionBackward : uint8_t { kAuto, kSplit, kFused, kWgmma, kWgmmaFused };

// On one H200 (2026-11-29, bench/RESULTS.md), since its loads are visible as soon as they land (Note
// [load ring protocol]), the warp-specialized wgmma forward is 1.23-1.40x the mma.sync one at
// 2 x 8192 and 0.99-1.05x at 8 x 2048 (before, 0.86-0.94x there: its persistent blocks pay a schedule
// and a pipeline fill that short rows amortise least). auto takes it from this mean length on; shorter
// rows, such as a D block's routed ones, keep the mma.sync kernel (the wgmma one was not timed there).
constexpr int64_t kWgmmaForwardMinRows = 2048;

constexpr int kAttentionMaxHeadDim = 256;

struct AttentionShape {
  int64_t n = 0;     // packed rows N
  int h = 0, g = 0;  // query heads, key/value heads (h % g == 0)
  int d = 0;         // head dim, 1..kAttentionMaxHeadDim
  int num_seqs = 0;  // S: cu_seqlens holds S + 1 offsets
  double scale = 0;  // multiplies q . k
};

// out [N, H, D] and lse [H, N] of every row of every sequence.
void launch_attention_forward(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                              const void* q, const void* k, const void* v, const int32_t* cu_seqlens,
                              void* out, void* lse, cudaStream_t stream);

// Bytes of the workspace launch_attention_backward needs: the fused mma.sync backward's
// (N * H * (4 D + 4) + 4) where it may run (`backward` fused, bf16, D = 64 or 128, `kernel` not
// generic), the fused wgmma backward's (dq_sums_workspace_bytes, attention_dq_sums.cuh) where that
// may run, else 0.
size_t attention_backward_workspace_bytes(ElemType type, const AttentionShape& shape,
                                          AttentionKernel kernel, AttentionBackward backward);

// dq, dk, dv from the forward's out and lse and the output gradient dout. `delta` is scratch of H * N
// statistics-type elements and `workspace` of attention_backward_workspace_bytes (null when 0), both
// overwritten.
void launch_attention_backward(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                               AttentionBackward backward, const void* q, const void* k,
                               const void* v, const int32_t* cu_seqlens, const void* out,
                               const void* lse, const void* dout, void* delta, void* workspace,
                               void* dq, void* dk, void* dv, cudaStream_t stream);

}  // namespace dtrn::cuda
