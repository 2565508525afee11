// The kernels around the fused wgmma backward's fixed-point dq (Note [Deterministic dq in fixed
// point], attention_dq_sums.cuh): the bounds of K and V before it and the conversion of the sums to
// bf16 dq after it. The per-row factors come from the delta preprocess (attention_backward.cu).
#include "cuda/attention_common.cuh"
#include "cuda/attention_dq_sums.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

constexpr int kBoundThreads = 256;
constexpr int kBoundMaxBlocks = 1024;

// The largest of the two operands as unsigned bits: for floats of sign 0 (absolute values) the
// order of the bits is the order of the values, and NaN (0x7fc00000 and above) ranks above
// infinity, so a NaN anywhere reaches the bound (fmaxf would drop it).
__device__ __forceinline__ uint32_t max_bits(uint32_t a, uint32_t b) { return a > b ? a : b; }

// bound[0] = max |k|, bound[1] = max over rows of |v_row|_2^2 ([N * G] rows of D bf16, D a multiple
// of 8 dividing 256: each lane takes one 16-byte chunk, D / 8 lanes a row). bound must be zero.
__global__ void __launch_bounds__(kBoundThreads)
    attention_kv_bound_kernel(const Bf16* __restrict__ k, const Bf16* __restrict__ v, int64_t rows,
                              int d, uint32_t* __restrict__ bound) {
  const int lanes = d / 8;
  const int64_t chunks = rows * lanes;
  const int64_t stride = int64_t{gridDim.x} * kBoundThreads;
  // Every lane of a warp runs the same rounds, so the shuffles below see all 32.
  const int64_t rounds = (chunks + stride - 1) / stride;
  uint32_t k_max = 0, v_max = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    const int64_t c = r * stride + blockIdx.x * int64_t{kBoundThreads} + threadIdx.x;
    float v_sq = 0.f;
    if (c < chunks) {
      const uint4 kc = reinterpret_cast<const uint4*>(k)[c];
      const uint4 vc = reinterpret_cast<const uint4*>(v)[c];
      const uint32_t kw[4] = {kc.x, kc.y, kc.z, kc.w}, vw[4] = {vc.x, vc.y, vc.z, vc.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // A bf16's absolute value as float bits is its own bits, sign cleared, shifted up 16.
        k_max = max_bits(k_max, (kw[i] & 0x7fffu) << 16);
        k_max = max_bits(k_max, kw[i] & 0x7fff0000u);
        const float lo = __uint_as_float(vw[i] << 16), hi = __uint_as_float(vw[i] & 0xffff0000u);
        v_sq = fmaf(lo, lo, fmaf(hi, hi, v_sq));
      }
    }
    for (int offset = lanes / 2; offset > 0; offset /= 2) {
      v_sq += __shfl_xor_sync(0xffffffffu, v_sq, offset);
    }
    v_max = max_bits(v_max, __float_as_uint(fabsf(v_sq)));
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    k_max = max_bits(k_max, __shfl_xor_sync(0xffffffffu, k_max, offset));
    v_max = max_bits(v_max, __shfl_xor_sync(0xffffffffu, v_max, offset));
  }
  if (threadIdx.x % 32 == 0) {
    atomicMax(bound, k_max);  // unsigned max: the order of arrival changes nothing
    atomicMax(bound + 1, v_max);
  }
}

// One block per (query tile of kDqSumRows rows, head); thread t of 128 reads its 16 sums of each
// half tile (the fragment of Note [wgmma m64nNk16 fragments]: rows 16 w + g and + 8, columns 8 j +
// 2 q,
// + 1 of the half) and writes them as bf16 dq.
constexpr int kFromSumsThreads = 128;

__global__ void __launch_bounds__(kFromSumsThreads)
    dq_from_sums_kernel(const int32_t* __restrict__ cu, AttentionShape shape,
                        const int32_t* __restrict__ sums, const float* __restrict__ factor,
                        Bf16* __restrict__ dq) {
  const SeqTile tile = locate_tile<kFromSumsThreads>(cu, shape.num_seqs, shape.n, kDqSumRows,
                                                     blockIdx.x, /*reverse=*/false);
  if (!tile.found) return;
  const int head = blockIdx.y, t = threadIdx.x;
  const int warp = t / 32, lane = t % 32;
  const int q_lo = tile.tile * kDqSumRows, q_rows = min(kDqSumRows, tile.len - q_lo);
  const float scale = static_cast<float>(shape.scale);
  float row_scale[2];
  int64_t row_of[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = 16 * warp + lane / 4 + 8 * half;
    valid[half] = r < q_rows;
    row_of[half] = tile.start + q_lo + r;
    const float f = valid[half] ? factor[head * shape.n + row_of[half]] : 1.f;
    // f is a power of two (exact reciprocal) or NaN.
    row_scale[half] = isfinite(f) ? scale / f : __int_as_float(0x7fffffff);
  }
#pragma unroll
  for (int col_half = 0; col_half < 2; ++col_half) {
    const int4* src = reinterpret_cast<const int4*>(dq_sum_half_tile(
        const_cast<int32_t*>(sums), shape.h, tile.start, tile.seq, q_lo, head, col_half));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int4 c = src[j * kFromSumsThreads + t];
      const int col = kDqSumCols * col_half + 8 * j + 2 * (lane % 4);
      const int values[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (!valid[half]) continue;
        *reinterpret_cast<uint32_t*>(dq + (row_of[half] * shape.h + head) * shape.d + col) =
            pack_bf16(static_cast<float>(values[2 * half]) * row_scale[half],
                      static_cast<float>(values[2 * half + 1]) * row_scale[half]);
      }
    }
  }
}

}  // namespace

size_t dq_sums_workspace_bytes(const AttentionShape& shape) {
  const size_t sums = static_cast<size_t>(dq_sum_tiles(shape)) * shape.h * 2 * kDqSumHalfInts;
  return (4 + sums) * sizeof(int32_t) + static_cast<size_t>(shape.h) * shape.n * sizeof(float);
}

DqSumsWorkspace dq_sums_workspace(const AttentionShape& shape, void* workspace) {
  auto* words = static_cast<int32_t*>(workspace);
  const size_t sums = static_cast<size_t>(dq_sum_tiles(shape)) * shape.h * 2 * kDqSumHalfInts;
  return DqSumsWorkspace{reinterpret_cast<float*>(words), words + 4,
                         reinterpret_cast<float*>(words + 4 + sums), (4 + sums) * sizeof(int32_t)};
}

void launch_attention_kv_bound(const AttentionShape& shape, const void* k, const void* v,
                               const DqSumsWorkspace& ws, cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(ws.bound, 0, ws.zeroed_bytes, stream));
  const int64_t rows = shape.n * shape.g, chunks = rows * (shape.d / 8);
  const int64_t wanted = (chunks + kBoundThreads - 1) / kBoundThreads;
  const auto blocks = static_cast<unsigned>(wanted < kBoundMaxBlocks ? wanted : kBoundMaxBlocks);
  if (blocks == 0) return;
  attention_kv_bound_kernel<<<blocks, kBoundThreads, 0, stream>>>(
      static_cast<const Bf16*>(k), static_cast<const Bf16*>(v), rows, shape.d,
      reinterpret_cast<uint32_t*>(ws.bound));
  CUDA_CHECK_LAUNCH();
}

void launch_dq_from_sums(const AttentionShape& shape, const int32_t* cu_seqlens,
                         const DqSumsWorkspace& ws, void* dq, cudaStream_t stream) {
  const dim3 grid(attention_tile_blocks(shape, kDqSumRows), shape.h);
  dq_from_sums_kernel<<<grid, kFromSumsThreads, 0, stream>>>(cu_seqlens, shape, ws.sums, ws.factor,
                                                             static_cast<Bf16*>(dq));
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
