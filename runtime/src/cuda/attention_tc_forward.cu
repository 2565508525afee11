// The bf16 tensor-core attention forward (attention.h), FlashAttention-2 style.
//
// A block owns a tile of 128 query rows of one head: at D = 64, 4 warps of 32 rows (two 16-row m tiles
// each); at D = 128, 8 warps of 16 rows (the accumulators of a second m tile would not fit the
// registers). Every B fragment of K and V loaded from shared memory feeds the mma of each of the warp's
// m tiles: at D = 64 the kernel was bound by shared-memory bandwidth (ldmatrix) with one m tile per warp.
// The warp's Q rows stay in registers as A fragments. It walks the causal key tiles of 64 keys in order,
// each staged by cp.async into one of two shared buffers while the previous one is computed on; a warp
// skips the tiles whose keys all come after its last query. Per key tile and warp: S = Q K^T (f32 C
// fragments); only a tile that reaches past the warp's first query masks keys after the query
// (s = -inf); one step of the online softmax (attention_softmax.cuh) turns S into P, which is rounded to
// bf16 and multiplied into V straight from registers. Then out = o / l and lse = m scale + ln l.
#include "cuda/attention_softmax.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

// Warps per block and 16-row m tiles per warp (their product is 8: 128 query rows per block).
template <int D>
struct ForwardTiling {
  static constexpr int kM = D == 64 ? 2 : 1;
  static constexpr int kWarps = kTcBlockRows / (16 * kM);
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kWarpRows = 16 * kM;
};

// D = 64 keeps two blocks on an SM.
template <int D>
__global__ void __launch_bounds__(ForwardTiling<D>::kThreads, D == 64 ? 2 : 1)
    tc_forward_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k,
                      const Bf16* __restrict__ v, const int32_t* __restrict__ cu,
                      AttentionShape shape, long long lead, Bf16* __restrict__ out,
                      float* __restrict__ lse) {
  using G = TcGeometry<D>;
  using F = ForwardTiling<D>;
  constexpr int kM = F::kM, kThreads = F::kThreads;
  constexpr int kRows = kTcBlockRows, kKv = kTcKvRows;
  constexpr int kTile = kKv * G::kStride;  // one K or V buffer
  constexpr float kNegInf = -__builtin_huge_valf();
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Bf16* s_q = reinterpret_cast<Bf16*>(smem_bytes);
  Bf16* s_k = s_q + kRows * G::kStride;  // two buffers
  Bf16* s_v = s_k + 2 * kTile;           // two buffers

  // Heads in turn, with leads, last query tiles first (Note [Attention block order]).
  const OrderedBlock block = lead_ordered_block(blockIdx.x, gridDim.x / shape.h, lead, shape.h);
  const int head = block.group, kv = head / (shape.h / shape.g);
  const SeqTile tile = locate_tile_major_in_warp(cu, shape.num_seqs, shape.n, kRows, block.rank,
                                                 /*reverse=*/true);
  if (!tile.found) return;
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int kv_end = q_lo + q_rows, num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t kv_stride = int64_t{shape.g} * D;
  const Bf16* k_seq = k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
  const Bf16* v_seq = v + (tile.start * shape.g + kv) * D;
  const float scale = static_cast<float>(shape.scale), scale_log2 = scale * kLog2e;

  tc_stage<D, kRows, kThreads>(s_q, q + ((tile.start + q_lo) * shape.h + head) * D,
                               int64_t{shape.h} * D, q_rows);
  cp_async_commit();
  tc_stage<D, kKv, kThreads>(s_k, k_seq, kv_stride, min(kKv, kv_end));
  tc_stage<D, kKv, kThreads>(s_v, v_seq, kv_stride, min(kKv, kv_end));
  cp_async_commit();

  // This lane's rows within the tile: for m tile mi, row0 + 16 mi and 8 below it.
  const int row0 = warp * F::kWarpRows + lane / 4;
  const int warp_q_first = q_lo + warp * F::kWarpRows;  // the warp's first query
  cp_async_wait<1>();  // the Q tile (K/V tile 0 may still be in flight)
  __syncthreads();
  uint32_t q_frag[kM][G::kKSteps][4];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int kk = 0; kk < G::kKSteps; ++kk) {
      load_a<D>(q_frag[mi][kk], s_q, warp * F::kWarpRows + mi * 16, kk * 16);
    }
  }
  float o[kM][G::kDTiles][4] = {};
  float m[kM][2], l[kM][2] = {};
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) m[mi][0] = m[mi][1] = kNegInf;

  for (int t = 0; t < num_kv_tiles; ++t) {
    const int buf = t % 2;
    if (t + 1 < num_kv_tiles) {
      const int next_lo = (t + 1) * kKv;
      tc_stage<D, kKv, kThreads>(s_k + (1 - buf) * kTile, k_seq + next_lo * kv_stride, kv_stride,
                                 min(kKv, kv_end - next_lo));
      tc_stage<D, kKv, kThreads>(s_v + (1 - buf) * kTile, v_seq + next_lo * kv_stride, kv_stride,
                                 min(kKv, kv_end - next_lo));
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int kv_lo = t * kKv;
    // A tile whose keys all come after the warp's last query adds nothing (never tile 0, so every
    // warp's m is finite from tile 0 on).
    if (kv_lo <= warp_q_first + F::kWarpRows - 1) {
      const Bf16* sk = s_k + buf * kTile;
      const Bf16* sv = s_v + buf * kTile;

      float s[kM][kKv / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < G::kKSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < kKv / 16; ++np) {
          uint32_t b[4];
          load_b_from_rows<D>(b, sk, np * 16, kk * 16);
#pragma unroll
          for (int mi = 0; mi < kM; ++mi) {
            mma_bf16(s[mi][2 * np], q_frag[mi][kk], b[0], b[1]);
            mma_bf16(s[mi][2 * np + 1], q_frag[mi][kk], b[2], b[3]);
          }
        }
      }

      // Only a tile whose last key comes after the warp's first query needs the mask.
      const bool diagonal = kv_lo + kKv - 1 > warp_q_first;
      // A separate pass, so the index arithmetic stays out of the tiles below the diagonal (most of
      // them): the integer pipe, not the tensor cores, limited this kernel when it ran on every tile.
      if (diagonal) {
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) mask_causal(s[mi], kv_lo, q_lo + row0 + mi * 16);
      }
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        float correction[2];
        online_softmax_tile(s[mi], m[mi], l[mi], scale_log2, correction);
        rescale_rows(o[mi], correction);
      }
      mma_regs_by_tile_m<D, kM, kKv>(o, s, sv);  // o += P V
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
    finish_rows<D>(o[mi], m[mi], l[mi], row0 + mi * 16, q_rows, tile.start + q_lo, head, shape, out,
                   lse);
  }
}

template <int D>
void launch_tc_forward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                       const int32_t* cu, Bf16* out, float* lse, cudaStream_t stream) {
  constexpr int kSmem = (kTcBlockRows + 4 * kTcKvRows) * TcGeometry<D>::kStride * sizeof(Bf16);
  allow_shared_memory(reinterpret_cast<const void*>(&tc_forward_kernel<D>), kSmem);
  const unsigned blocks = attention_tile_blocks(shape, kTcBlockRows);
  tc_forward_kernel<D><<<blocks * shape.h, ForwardTiling<D>::kThreads, kSmem, stream>>>(
      q, k, v, cu, shape, attention_lead_blocks(blocks), out, lse);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void tensor_core_attention_forward(const AttentionShape& shape, const void* q, const void* k,
                                   const void* v, const int32_t* cu_seqlens, void* out, float* lse,
                                   cudaStream_t stream) {
  const auto* qb = static_cast<const Bf16*>(q);
  const auto* kb = static_cast<const Bf16*>(k);
  const auto* vb = static_cast<const Bf16*>(v);
  auto* ob = static_cast<Bf16*>(out);
  if (shape.d == 64) {
    launch_tc_forward<64>(shape, qb, kb, vb, cu_seqlens, ob, lse, stream);
  } else {
    launch_tc_forward<128>(shape, qb, kb, vb, cu_seqlens, ob, lse, stream);
  }
}

}  // namespace dtrn::cuda
