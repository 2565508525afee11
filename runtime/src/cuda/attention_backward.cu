// The attention backward (attention.h): the delta preprocess all implementations share, the two
// generic kernels, and the dispatch between them and the bf16 kernels on the tensor cores
// (attention_tc_backward.cu on mma.sync, attention_wgmma_backward.cu on wgmma).
//
// With P_ij = exp(scale q_i . k_j - lse_i), delta_i = dO_i . O_i = sum_j P_ij (dO_i . v_j):
//   dS_ij = P_ij (dO_i . v_j - delta_i),  dq_i = scale sum_j dS_ij k_j,
//   dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dO_i,
// dk and dv summed over the query heads of the key's group (cpu/attention.cc derives it).
//
// Generic kernels (Note [Generic attention layout]): the dk/dv kernel owns kRows key rows of one KV head
// and walks, for each query head of the group in order, the query rows from the tile's first key to the
// sequence end, kChunk at a time; the dq kernel owns kRows query rows of one head and walks the causal
// keys. Each recomputes P from the saved lse, so neither needs the other's results.
#include <algorithm>

#include "cuda/attention_dq_sums.cuh"
#include "cuda/attention_generic.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/wgmma_support.h"

namespace dtrn::cuda {
namespace {

// delta[head * N + row] = sum_c dout[row, head, c] * out[row, head, c]: kDeltaLanes lanes per (row,
// head), each taking W-element chunks lane, lane + kDeltaLanes, ... of the head (16-byte accesses where
// D is a multiple of 16 / sizeof(T) and the rows are aligned: a 360m head of 64 bf16 is one chunk a
// lane), then a butterfly over the group. A warp per (row, head) with 2-byte loads ran at a third of
// the bandwidth. With `factor` (the fused wgmma backward) it also writes factor[head * N + row], the
// fixed-point scale of Note [Deterministic dq in fixed point], from |dout_row|_2, delta and the K and V
// bounds in `bound` (attention_kv_bound_kernel's).
constexpr int kDeltaLanes = 8;

template <typename T, int W>
__global__ void __launch_bounds__(kAttentionThreads)
    attention_delta_kernel(const T* __restrict__ out, const T* __restrict__ dout, int64_t n, int h,
                           int d, typename AccOf<T>::type* __restrict__ delta,
                           const float* __restrict__ bound, float* __restrict__ factor) {
  using Acc = typename AccOf<T>::type;
  const int lane = threadIdx.x % kDeltaLanes, chunks = d / W;
  const int64_t groups = int64_t{gridDim.x} * (kAttentionThreads / kDeltaLanes);
  const int64_t first = (blockIdx.x * int64_t{kAttentionThreads} + threadIdx.x) / kDeltaLanes;
  // Every lane of a warp runs the same number of iterations (n * h groups, whole warps of them), so
  // the shuffles below see all 32 lanes.
  const int64_t items = n * h, rounds = (items + groups - 1) / groups;
  for (int64_t k = 0; k < rounds; ++k) {
    const int64_t w = first + k * groups;
    Acc sum = 0, norm2 = 0;
    if (w < items) {
      // [N, H, D] contiguous: (row, head) = (w / H, w % H) starts at w * D.
      const Chunk<T, W>* o = reinterpret_cast<const Chunk<T, W>*>(out + w * d);
      const Chunk<T, W>* g = reinterpret_cast<const Chunk<T, W>*>(dout + w * d);
      for (int c = lane; c < chunks; c += kDeltaLanes) {
        const Chunk<T, W> oc = o[c], gc = g[c];
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const Acc gv = Converter<Acc, T>::run(gc.v[e]);
          sum += gv * Converter<Acc, T>::run(oc.v[e]);
          if (factor != nullptr) norm2 += gv * gv;
        }
      }
    }
#pragma unroll
    for (int offset = kDeltaLanes / 2; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
      if (factor != nullptr) norm2 += __shfl_xor_sync(0xffffffffu, norm2, offset);
    }
    if (w < items && lane == 0) {
      delta[(w % h) * n + w / h] = sum;
      if (factor != nullptr) {
        factor[(w % h) * n + w / h] = dq_fixed_point_factor(
            bound[0], bound[1], static_cast<float>(norm2), static_cast<float>(sum));
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttentionThreads)
    generic_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                      const int32_t* __restrict__ cu, AttentionShape shape,
                      const typename AccOf<T>::type* __restrict__ lse, const T* __restrict__ dout,
                      const typename AccOf<T>::type* __restrict__ delta, T* __restrict__ dq) {
  using Acc = typename AccOf<T>::type;
  using L = GenericLayout<Acc>;
  constexpr int kRows = L::kRows, kGroups = L::kGroups, kChunk = L::kChunk;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  const int d = shape.d, stride = L::stride(d);
  Acc* s_q = reinterpret_cast<Acc*>(smem_bytes);  // [kRows][stride]
  Acc* s_g = s_q + kRows * stride;                // [kRows][stride], dout
  Acc* s_dq = s_g + kRows * stride;               // [kRows][stride], sum_j dS_ij k_j
  Acc* s_k = s_dq + kRows * stride;               // [kChunk][d]
  Acc* s_v = s_k + kChunk * d;                    // [kChunk][d]

  const SeqTile tile = locate_tile(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int r = threadIdx.x / kGroups, cg = threadIdx.x % kGroups;
  const int i = q_lo + r;
  const bool row_valid = r < q_rows;
  const int64_t row = tile.start + i;

  const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * d;
  stage_rows(s_q, stride, q + q_offset, int64_t{shape.h} * d, kRows, q_rows, d);
  stage_rows(s_g, stride, dout + q_offset, int64_t{shape.h} * d, kRows, q_rows, d);
  for (int c = cg; c < d; c += kGroups) s_dq[r * stride + c] = 0;
  const Acc row_lse = row_valid ? lse[head * shape.n + row] : Acc(0);
  const Acc row_delta = row_valid ? delta[head * shape.n + row] : Acc(0);

  const int kv_end = q_lo + q_rows;
  for (int k0 = 0; k0 < kv_end; k0 += kChunk) {
    const int k_rows = min(kChunk, kv_end - k0);
    __syncthreads();
    stage_rows(s_k, d, k + ((tile.start + k0) * shape.g + kv) * d, int64_t{shape.g} * d, kChunk,
               k_rows, d);
    stage_rows(s_v, d, v + ((tile.start + k0) * shape.g + kv) * d, int64_t{shape.g} * d, kChunk,
               k_rows, d);
    __syncthreads();

    Acc ds[kChunk];
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      Acc part_s = 0, part_p = 0;
      for (int c = cg; c < d; c += kGroups) {
        part_s += s_q[r * stride + c] * s_k[jj * d + c];
        part_p += s_g[r * stride + c] * s_v[jj * d + c];
      }
      const Acc s = row_group_sum<kGroups>(part_s);
      const Acc dp = row_group_sum<kGroups>(part_p);
      const bool live = row_valid && jj < k_rows && k0 + jj <= i;
      const Acc p = live ? acc_exp(s * static_cast<Acc>(shape.scale) - row_lse) : Acc(0);
      ds[jj] = p * (dp - row_delta);
    }
    for (int c = cg; c < d; c += kGroups) {
      Acc a = s_dq[r * stride + c];
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) a += ds[jj] * s_k[jj * d + c];
      s_dq[r * stride + c] = a;
    }
  }

  if (row_valid) {
    T* dq_row = dq + (row * shape.h + head) * d;
    for (int c = cg; c < d; c += kGroups) {
      dq_row[c] = Converter<T, Acc>::run(static_cast<Acc>(shape.scale) * s_dq[r * stride + c]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kAttentionThreads)
    generic_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const int32_t* __restrict__ cu, AttentionShape shape,
                        const typename AccOf<T>::type* __restrict__ lse, const T* __restrict__ dout,
                        const typename AccOf<T>::type* __restrict__ delta, T* __restrict__ dk,
                        T* __restrict__ dv) {
  using Acc = typename AccOf<T>::type;
  using L = GenericLayout<Acc>;
  constexpr int kRows = L::kRows, kGroups = L::kGroups, kChunk = L::kChunk;
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  const int d = shape.d, stride = L::stride(d);
  Acc* s_k = reinterpret_cast<Acc*>(smem_bytes);  // [kRows][stride]
  Acc* s_v = s_k + kRows * stride;                // [kRows][stride]
  Acc* s_dk = s_v + kRows * stride;               // [kRows][stride], sum dS_ij q_i
  Acc* s_dv = s_dk + kRows * stride;              // [kRows][stride], sum P_ij dO_i
  Acc* s_q = s_dv + kRows * stride;               // [kChunk][d]
  Acc* s_g = s_q + kChunk * d;                    // [kChunk][d], dout
  Acc* s_lse = s_g + kChunk * d;                  // [kChunk]
  Acc* s_delta = s_lse + kChunk;                  // [kChunk]

  const SeqTile tile = locate_tile(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/false);
  if (!tile.found) return;
  const int kv = blockIdx.y, group = shape.h / shape.g;
  const int k_lo = tile.tile * kRows, k_rows = min(kRows, tile.len - k_lo);
  const int r = threadIdx.x / kGroups, cg = threadIdx.x % kGroups;
  const int j = k_lo + r;  // this thread's key row within the sequence
  const bool key_valid = r < k_rows;

  const int64_t kv_offset = ((tile.start + k_lo) * shape.g + kv) * d;
  stage_rows(s_k, stride, k + kv_offset, int64_t{shape.g} * d, kRows, k_rows, d);
  stage_rows(s_v, stride, v + kv_offset, int64_t{shape.g} * d, kRows, k_rows, d);
  for (int c = cg; c < d; c += kGroups) {
    s_dk[r * stride + c] = 0;
    s_dv[r * stride + c] = 0;
  }

  for (int head = kv * group; head < (kv + 1) * group; ++head) {
    // Causal: only query rows at or after the tile's first key see any of its keys.
    for (int i0 = k_lo; i0 < tile.len; i0 += kChunk) {
      const int q_rows = min(kChunk, tile.len - i0);
      __syncthreads();
      const int64_t q_offset = ((tile.start + i0) * shape.h + head) * d;
      stage_rows(s_q, d, q + q_offset, int64_t{shape.h} * d, kChunk, q_rows, d);
      stage_rows(s_g, d, dout + q_offset, int64_t{shape.h} * d, kChunk, q_rows, d);
      if (threadIdx.x < kChunk) {
        const bool ok = static_cast<int>(threadIdx.x) < q_rows;
        const int64_t stat = head * shape.n + tile.start + i0 + threadIdx.x;
        s_lse[threadIdx.x] = ok ? lse[stat] : Acc(0);
        s_delta[threadIdx.x] = ok ? delta[stat] : Acc(0);
      }
      __syncthreads();

      Acc p[kChunk], ds[kChunk];
#pragma unroll
      for (int ii = 0; ii < kChunk; ++ii) {
        Acc part_s = 0, part_p = 0;
        for (int c = cg; c < d; c += kGroups) {
          part_s += s_q[ii * d + c] * s_k[r * stride + c];
          part_p += s_g[ii * d + c] * s_v[r * stride + c];
        }
        const Acc s = row_group_sum<kGroups>(part_s);
        const Acc dp = row_group_sum<kGroups>(part_p);
        const bool live = key_valid && ii < q_rows && j <= i0 + ii;
        p[ii] = live ? acc_exp(s * static_cast<Acc>(shape.scale) - s_lse[ii]) : Acc(0);
        ds[ii] = p[ii] * (dp - s_delta[ii]);
      }
      for (int c = cg; c < d; c += kGroups) {
        Acc a_k = s_dk[r * stride + c], a_v = s_dv[r * stride + c];
#pragma unroll
        for (int ii = 0; ii < kChunk; ++ii) {
          a_k += ds[ii] * s_q[ii * d + c];
          a_v += p[ii] * s_g[ii * d + c];
        }
        s_dk[r * stride + c] = a_k;
        s_dv[r * stride + c] = a_v;
      }
    }
  }

  if (key_valid) {
    const int64_t offset = ((tile.start + j) * shape.g + kv) * d;
    for (int c = cg; c < d; c += kGroups) {
      dk[offset + c] = Converter<T, Acc>::run(static_cast<Acc>(shape.scale) * s_dk[r * stride + c]);
      dv[offset + c] = Converter<T, Acc>::run(s_dv[r * stride + c]);
    }
  }
}

template <typename T>
void launch_delta(const AttentionShape& shape, const T* out, const T* dout,
                  typename AccOf<T>::type* delta, const float* bound, float* factor,
                  cudaStream_t stream) {
  constexpr int64_t kMaxBlocks = 8192, kGroupsPerBlock = kAttentionThreads / kDeltaLanes;
  const int64_t items = shape.n * shape.h;
  const unsigned blocks =
      static_cast<unsigned>(std::min(kMaxBlocks, (items + kGroupsPerBlock - 1) / kGroupsPerBlock));
  constexpr int W = kChunkElems<T>;
  if (shape.d % W == 0 && rows_aligned16(out, shape.d, sizeof(T)) && rows_aligned16(dout, shape.d, sizeof(T))) {
    attention_delta_kernel<T, W><<<blocks, kAttentionThreads, 0, stream>>>(
        out, dout, shape.n, shape.h, shape.d, delta, bound, factor);
  } else {
    attention_delta_kernel<T, 1><<<blocks, kAttentionThreads, 0, stream>>>(
        out, dout, shape.n, shape.h, shape.d, delta, bound, factor);
  }
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_generic_backward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                             const int32_t* cu, const typename AccOf<T>::type* lse, const T* dout,
                             const typename AccOf<T>::type* delta, T* dq, T* dk, T* dv,
                             cudaStream_t stream) {
  using Acc = typename AccOf<T>::type;
  using L = GenericLayout<Acc>;
  const int stride = L::stride(shape.d);
  const int dq_smem =
      static_cast<int>((3 * L::kRows * stride + 2 * L::kChunk * shape.d) * sizeof(Acc));
  allow_shared_memory(reinterpret_cast<const void*>(&generic_dq_kernel<T>), dq_smem);
  generic_dq_kernel<T><<<dim3(attention_tile_blocks(shape, L::kRows), shape.h), kAttentionThreads,
                         dq_smem, stream>>>(q, k, v, cu, shape, lse, dout, delta, dq);
  CUDA_CHECK_LAUNCH();
  const int dkdv_smem = static_cast<int>(
      (4 * L::kRows * stride + 2 * L::kChunk * shape.d + 2 * L::kChunk) * sizeof(Acc));
  allow_shared_memory(reinterpret_cast<const void*>(&generic_dkdv_kernel<T>), dkdv_smem);
  generic_dkdv_kernel<T><<<dim3(attention_tile_blocks(shape, L::kRows), shape.g), kAttentionThreads,
                           dkdv_smem, stream>>>(q, k, v, cu, shape, lse, dout, delta, dk, dv);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void generic_attention_backward(ElemType type, const AttentionShape& shape, const void* q,
                                const void* k, const void* v, const int32_t* cu_seqlens,
                                const void* lse, const void* dout, const void* delta, void* dq,
                                void* dk, void* dv, cudaStream_t stream) {
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename AccOf<T>::type;
    launch_generic_backward(shape, static_cast<const T*>(q), static_cast<const T*>(k),
                            static_cast<const T*>(v), cu_seqlens, static_cast<const Acc*>(lse),
                            static_cast<const T*>(dout), static_cast<const Acc*>(delta),
                            static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv), stream);
  });
}

namespace {

// Whether the fused wgmma backward runs (given the tensor cores apply): asked for, or auto, at D = 64
// on a GPU that runs the wgmma kernels.
bool wgmma_fused_backward(const AttentionShape& shape, AttentionBackward backward) {
  return (backward == AttentionBackward::kWgmmaFused || backward == AttentionBackward::kAuto) &&
         shape.d == 64 && wgmma_available(current_device());
}

}  // namespace

size_t attention_backward_workspace_bytes(ElemType type, const AttentionShape& shape,
                                          AttentionKernel kernel, AttentionBackward backward) {
  // Without the pointers this is an upper bound: misaligned operands take the generic kernels later.
  if (!attention_uses_tensor_cores(type, shape, kernel, nullptr, 0)) return 0;
  if (backward == AttentionBackward::kFused) return tensor_core_fused_workspace_bytes(shape);
  return wgmma_fused_backward(shape, backward) ? dq_sums_workspace_bytes(shape) : 0;
}

void launch_attention_backward(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                               AttentionBackward backward, const void* q, const void* k,
                               const void* v, const int32_t* cu_seqlens, const void* out,
                               const void* lse, const void* dout, void* delta, void* workspace,
                               void* dq, void* dk, void* dv, cudaStream_t stream) {
  if (shape.n == 0 || shape.num_seqs == 0) return;
  const void* pointers[] = {q, k, v, dout, dq, dk, dv};
  const bool tensor_cores = attention_uses_tensor_cores(type, shape, kernel, pointers, 7);
  const bool fused_wgmma =
      tensor_cores && workspace != nullptr && wgmma_fused_backward(shape, backward);
  DqSumsWorkspace sums{};
  if (fused_wgmma) {
    sums = dq_sums_workspace(shape, workspace);
    launch_attention_kv_bound(shape, k, v, sums, stream);
  }
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename AccOf<T>::type;
    launch_delta(shape, static_cast<const T*>(out), static_cast<const T*>(dout),
                 static_cast<Acc*>(delta), fused_wgmma ? sums.bound : nullptr,
                 fused_wgmma ? sums.factor : nullptr, stream);
  });
  if (tensor_cores) {
    const bool wgmma = backward == AttentionBackward::kWgmma ||
                       backward == AttentionBackward::kAuto || fused_wgmma;
    if (wgmma && wgmma_available(current_device())) {
      wgmma_attention_backward(shape, q, k, v, cu_seqlens, static_cast<const float*>(lse), dout,
                               static_cast<const float*>(delta), dq, dk, dv,
                               fused_wgmma ? &sums : nullptr, stream);
      if (fused_wgmma) launch_dq_from_sums(shape, cu_seqlens, sums, dq, stream);
      return;
    }
    void* fused_workspace = backward == AttentionBackward::kFused ? workspace : nullptr;
    tensor_core_attention_backward(shape, q, k, v, cu_seqlens, static_cast<const float*>(lse), dout,
                                   static_cast<const float*>(delta), dq, dk, dv, fused_workspace,
                                   stream);
  } else {
    generic_attention_backward(type, shape, q, k, v, cu_seqlens, lse, dout, delta, dq, dk, dv,
                               stream);
  }
}

}  // namespace dtrn::cuda
