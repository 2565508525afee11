// The attention forward (attention.h): the generic kernel and the dispatch between it and the bf16
// tensor-core kernels (attention_tc_forward.cu, attention_wgmma_forward.cu).
//
// Generic forward, per block of kRows query rows of one head (Note [Generic attention layout]): the
// causal keys 0 .. last row of the tile are staged kChunk at a time; each row keeps a running maximum m
// and denominator l (online softmax): a chunk's scores s_j are compared with m once, the accumulated
// output and l are rescaled by exp(m_old - m_new), then p_j = exp(s_j - m_new) is added to l and
// p_j v_j to the output. At the end out = o / l and lse = m + log l, as the CPU reference defines them.
#include "cuda/attention_generic.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/wgmma_support.h"

namespace dtrn::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kAttentionThreads)
    generic_forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                           const int32_t* __restrict__ cu, AttentionShape shape, T* __restrict__ out,
                           typename AccOf<T>::type* __restrict__ lse) {
  using Acc = typename AccOf<T>::type;
  using L = GenericLayout<Acc>;
  constexpr int kRows = L::kRows, kGroups = L::kGroups, kChunk = L::kChunk;
  constexpr Acc kNegInf = -__builtin_huge_val();
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  const int d = shape.d, stride = L::stride(d);
  Acc* s_q = reinterpret_cast<Acc*>(smem_bytes);  // [kRows][stride]
  Acc* s_o = s_q + kRows * stride;                // [kRows][stride], the unnormalised output
  Acc* s_k = s_o + kRows * stride;                // [kChunk][d]
  Acc* s_v = s_k + kChunk * d;                    // [kChunk][d]

  const SeqTile tile = locate_tile(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int r = threadIdx.x / kGroups, cg = threadIdx.x % kGroups;
  const int i = q_lo + r;  // this thread's query row within the sequence

  stage_rows(s_q, stride, q + ((tile.start + q_lo) * shape.h + head) * d, int64_t{shape.h} * d, kRows,
             q_rows, d);
  for (int c = cg; c < d; c += kGroups) s_o[r * stride + c] = 0;

  Acc m = kNegInf, l = 0;
  const int kv_end = q_lo + q_rows;  // causal: no row of the tile sees a key at or past this
  for (int k0 = 0; k0 < kv_end; k0 += kChunk) {
    const int k_rows = min(kChunk, kv_end - k0);
    __syncthreads();  // the previous chunk is consumed
    stage_rows(s_k, d, k + ((tile.start + k0) * shape.g + kv) * d, int64_t{shape.g} * d, kChunk,
               k_rows, d);
    stage_rows(s_v, d, v + ((tile.start + k0) * shape.g + kv) * d, int64_t{shape.g} * d, kChunk,
               k_rows, d);
    __syncthreads();

    Acc s[kChunk];
    Acc chunk_max = kNegInf;
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      Acc part = 0;
      for (int c = cg; c < d; c += kGroups) part += s_q[r * stride + c] * s_k[jj * d + c];
      const Acc dot = row_group_sum<kGroups>(part);
      s[jj] = jj < k_rows && k0 + jj <= i ? dot * static_cast<Acc>(shape.scale) : kNegInf;
      chunk_max = max(chunk_max, s[jj]);
    }
    // Key 0 is in every row's first chunk, so m is finite from then on for the rows that are written;
    // rows past the sequence end may see only masked keys, and must not turn into NaN on the way.
    const Acc m_new = max(m, chunk_max);
    const Acc m_use = m_new == kNegInf ? Acc(0) : m_new;
    const Acc correction = acc_exp(m - m_use);
    Acc p[kChunk];
    Acc p_sum = 0;
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      p[jj] = acc_exp(s[jj] - m_use);
      p_sum += p[jj];
    }
    l = l * correction + p_sum;
    m = m_new;
    for (int c = cg; c < d; c += kGroups) {
      Acc o = s_o[r * stride + c] * correction;
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) o += p[jj] * s_v[jj * d + c];
      s_o[r * stride + c] = o;
    }
  }

  if (r < q_rows) {
    const int64_t row = tile.start + i;
    T* out_row = out + (row * shape.h + head) * d;
    for (int c = cg; c < d; c += kGroups) out_row[c] = Converter<T, Acc>::run(s_o[r * stride + c] / l);
    if (cg == 0) lse[head * shape.n + row] = m + acc_log(l);
  }
}

template <typename T>
void launch_generic_forward(const AttentionShape& shape, const T* q, const T* k, const T* v,
                            const int32_t* cu, T* out, typename AccOf<T>::type* lse,
                            cudaStream_t stream) {
  using Acc = typename AccOf<T>::type;
  using L = GenericLayout<Acc>;
  const int smem = static_cast<int>((2 * L::kRows * L::stride(shape.d) + 2 * L::kChunk * shape.d) *
                                    sizeof(Acc));
  allow_shared_memory(reinterpret_cast<const void*>(&generic_forward_kernel<T>), smem);
  const dim3 grid(attention_tile_blocks(shape, L::kRows), shape.h);
  generic_forward_kernel<T><<<grid, kAttentionThreads, smem, stream>>>(q, k, v, cu, shape, out, lse);
  CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void allow_shared_memory(const void* kernel, int bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

void generic_attention_forward(ElemType type, const AttentionShape& shape, const void* q,
                               const void* k, const void* v, const int32_t* cu_seqlens, void* out,
                               void* lse, cudaStream_t stream) {
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename AccOf<T>::type;
    launch_generic_forward(shape, static_cast<const T*>(q), static_cast<const T*>(k),
                           static_cast<const T*>(v), cu_seqlens, static_cast<T*>(out),
                           static_cast<Acc*>(lse), stream);
  });
}

bool attention_uses_tensor_cores(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                                 const void* const* pointers, int num_pointers) {
  if (kernel == AttentionKernel::kGeneric || type != ElemType::kBF16) return false;
  if (shape.d != 64 && shape.d != 128) return false;
  // cp.async moves 16 bytes at a time; rows of 64 or 128 bf16 keep every row start aligned when the
  // base pointers are.
  for (int i = 0; i < num_pointers; ++i) {
    if (!aligned16(pointers[i])) return false;
  }
  return true;
}

void launch_attention_forward(ElemType type, const AttentionShape& shape, AttentionKernel kernel,
                              const void* q, const void* k, const void* v, const int32_t* cu_seqlens,
                              void* out, void* lse, cudaStream_t stream) {
  if (shape.n == 0 || shape.num_seqs == 0) return;
  const void* pointers[] = {q, k, v, out};
  if (attention_uses_tensor_cores(type, shape, kernel, pointers, 4)) {
    const bool long_rows = shape.n >= kWgmmaForwardMinRows * shape.num_seqs;
    const bool wgmma = kernel == AttentionKernel::kWgmma || (kernel == AttentionKernel::kAuto && long_rows);
    if (wgmma && wgmma_available(current_device())) {
      wgmma_attention_forward(shape, q, k, v, cu_seqlens, out, static_cast<float*>(lse), stream);
    } else {
      tensor_core_attention_forward(shape, q, k, v, cu_seqlens, out, static_cast<float*>(lse), stream);
    }
  } else {
    generic_attention_forward(type, shape, q, k, v, cu_seqlens, out, lse, stream);
  }
}

}  // namespace dtrn::cuda
