// The bf16 tensor-core attention forward (attention.h), FlashAttention-2 style.
//
// A block of 8 warps owns a tile of 128 query rows of one head, 16 rows per warp; its Q tile stays in
// registers as A fragments. It walks the causal key tiles of 64 keys in order, each staged by cp.async
// into one of two shared buffers while the previous one is computed on; a warp skips the tiles whose
// keys all come after its last query (the last tile for the first four warps). Per key tile and warp:
// S = Q K^T (16 x 64, f32 C fragments); only a tile that reaches past the warp's first query masks keys
// after the query (s = -inf); the running row maximum m of the unscaled scores and the denominator l are
// updated (the rescale exp2((m_old - m_new) c), c = scale * log2 e, is applied to l and to the output
// accumulator once per tile); P = exp(scale (s - m)) = exp2(s c - m c), one fused multiply-add and one
// exp2 per score, is rounded to bf16 and multiplied into V straight from registers. A row's max is
// reduced over the 4 lanes that hold it; l stays a per-lane partial sum until the end. Then out = o / l
// and lse = m scale + ln l (natural log, as the CPU reference stores it).
#include "cuda/attention_tc.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

// D = 64 keeps to 128 registers so that two blocks (16 warps) share an SM.
template <int D>
__global__ void __launch_bounds__(kTcThreads, D == 64 ? 2 : 1)
    tc_forward_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k,
                      const Bf16* __restrict__ v, const int32_t* __restrict__ cu,
                      AttentionShape shape, Bf16* __restrict__ out, float* __restrict__ lse) {
  using G = TcGeometry<D>;
  constexpr int kRows = kTcBlockRows, kKv = kTcKvRows;
  constexpr int kTile = kKv * G::kStride;  // one K or V buffer
  constexpr float kNegInf = -__builtin_huge_valf();
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Bf16* s_q = reinterpret_cast<Bf16*>(smem_bytes);
  Bf16* s_k = s_q + kRows * G::kStride;  // two buffers
  Bf16* s_v = s_k + 2 * kTile;           // two buffers

  const SeqTile tile =
      locate_tile<kTcThreads>(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int kv_end = q_lo + q_rows, num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t kv_stride = int64_t{shape.g} * D;
  const Bf16* k_seq = k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
  const Bf16* v_seq = v + (tile.start * shape.g + kv) * D;
  const float scale = static_cast<float>(shape.scale), scale_log2 = scale * kLog2e;

  tc_stage<D, kRows>(s_q, q + ((tile.start + q_lo) * shape.h + head) * D, int64_t{shape.h} * D,
                     q_rows);
  cp_async_commit();
  tc_stage<D, kKv>(s_k, k_seq, kv_stride, min(kKv, kv_end));
  tc_stage<D, kKv>(s_v, v_seq, kv_stride, min(kKv, kv_end));
  cp_async_commit();

  // The two rows of this lane within the tile: warp * 16 + lane / 4 and 8 below it.
  const int row0 = warp * 16 + lane / 4;
  const int warp_q_first = q_lo + warp * 16;  // the warp's first query
  cp_async_wait<1>();  // the Q tile (K/V tile 0 may still be in flight)
  __syncthreads();
  uint32_t q_frag[G::kKSteps][4];
#pragma unroll
  for (int kk = 0; kk < G::kKSteps; ++kk) load_a<D>(q_frag[kk], s_q, warp * 16, kk * 16);
  float o[G::kDTiles][4] = {};
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};

  for (int t = 0; t < num_kv_tiles; ++t) {
    const int buf = t % 2;
    if (t + 1 < num_kv_tiles) {
      const int next_lo = (t + 1) * kKv;
      tc_stage<D, kKv>(s_k + (1 - buf) * kTile, k_seq + next_lo * kv_stride, kv_stride,
                       min(kKv, kv_end - next_lo));
      tc_stage<D, kKv>(s_v + (1 - buf) * kTile, v_seq + next_lo * kv_stride, kv_stride,
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
    if (kv_lo <= warp_q_first + 15) {
      const Bf16* sk = s_k + buf * kTile;
      const Bf16* sv = s_v + buf * kTile;

      float s[kKv / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < G::kKSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < kKv / 16; ++np) {
          uint32_t b[4];
          load_b_from_rows<D>(b, sk, np * 16, kk * 16);
          mma_bf16(s[2 * np], q_frag[kk], b[0], b[1]);
          mma_bf16(s[2 * np + 1], q_frag[kk], b[2], b[3]);
        }
      }

      // Only a tile whose last key comes after the warp's first query needs the mask.
      const bool diagonal = kv_lo + kKv - 1 > warp_q_first;
      // A separate pass, so the index arithmetic stays out of the tiles below the diagonal (most of
      // them): the integer pipe, not the tensor cores, limited this kernel when it ran on every tile.
      if (diagonal) {
#pragma unroll
        for (int nt = 0; nt < kKv / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = kv_lo + nt * 8 + (lane % 4) * 2 + (e & 1);
            if (key > q_lo + row0 + (e / 2) * 8) s[nt][e] = kNegInf;
          }
        }
      }
      float tile_max[2] = {kNegInf, kNegInf};
#pragma unroll
      for (int nt = 0; nt < kKv / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) tile_max[e / 2] = fmaxf(tile_max[e / 2], s[nt][e]);
      }
      float m_scaled[2], correction[2];  // m_new c, and the rescale of what came before
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = tile_max[half];
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m[half], mx);
        // Key 0 is unmasked for every row in the first tile, so m_new is finite; the guard keeps a
        // fully masked row (none occur) from computing inf - inf.
        m_scaled[half] = m_new == kNegInf ? 0.f : m_new * scale_log2;
        correction[half] = exp2f(m[half] * scale_log2 - m_scaled[half]);
        m[half] = m_new;
        l[half] *= correction[half];
      }
#pragma unroll
      for (int nt = 0; nt < kKv / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(fmaf(s[nt][e], scale_log2, -m_scaled[e / 2]));
          s[nt][e] = p;
          l[e / 2] += p;
        }
      }
#pragma unroll
      for (int dt = 0; dt < G::kDTiles; ++dt) {
        o[dt][0] *= correction[0];
        o[dt][1] *= correction[0];
        o[dt][2] *= correction[1];
        o[dt][3] *= correction[1];
      }
      mma_regs_by_tile<D, kKv>(o, s, sv);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  float inv_l[2];
  Bf16* dst[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
    inv_l[half] = 1.f / l[half];
    const int row = row0 + half * 8;
    const int64_t packed = tile.start + q_lo + row;
    valid[half] = row < q_rows;
    dst[half] = out + (packed * shape.h + head) * D;
    if (valid[half] && lane % 4 == 0) lse[head * shape.n + packed] = m[half] * scale + logf(l[half]);
  }
  store_rows<D>(o, inv_l, dst, valid);
}

template <int D>
void launch_tc_forward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                       const int32_t* cu, Bf16* out, float* lse, cudaStream_t stream) {
  constexpr int kSmem = (kTcBlockRows + 4 * kTcKvRows) * TcGeometry<D>::kStride * sizeof(Bf16);
  allow_shared_memory(reinterpret_cast<const void*>(&tc_forward_kernel<D>), kSmem);
  const dim3 grid(attention_tile_blocks(shape, kTcBlockRows), shape.h);
  tc_forward_kernel<D><<<grid, kTcThreads, kSmem, stream>>>(q, k, v, cu, shape, out, lse);
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
