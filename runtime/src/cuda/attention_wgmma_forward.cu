// The bf16 attention forward on Hopper's warpgroup MMA (wgmma.cuh; sm_90a only, wgmma_support.h), the
// same computation as the mma.sync forward (attention_tc_forward.cu) with the same outputs: out and the
// f32 lse that the tensor-core backward reads unchanged.
//
// A block owns a tile of kTcBlockRows = 128 query rows of one head, two warpgroups of 64 rows each, and
// walks the causal key tiles of kKv = 128 keys in order. All 256 threads stage the Q tile once and each
// K/V tile by cp.async into one of two shared buffers (the next tile loads while this one is computed
// on), in the swizzled layout of Note [wgmma operand layout: 128-byte swizzle]. Per key tile and
// warpgroup:
//   S = Q K^T: D / 16 SS wgmmas m64n128k16, Q and K both K-major (their rows are query and key rows of
//     D contiguous elements), into 64 f32 accumulators per thread;
//   the online softmax on those accumulators (attention_softmax.cuh: their layout per warp is mma.sync's),
//     the causal mask only on the tile that reaches past the warpgroup's first query (the last one);
//   O += P V: P rounded to bf16 in registers is the A operand (Note [wgmma m64nNk16 fragments]), V the
//     B operand MN-major (its rows are keys, K of this product, and its D columns N contiguous), so the
//     transpose flag is set: kKv / 16 RS wgmmas m64nDk16.
// Each product is issued, committed and waited for before its accumulators are read (one warpgroup's
// softmax can run while the other's MMAs do; overlapping them within a warpgroup, as FlashAttention-3
// does, is the next step once this is measured). Ordering against the cp.async writes: every thread
// fences its completed copies into the async proxy (fence.proxy.async) before the barrier that precedes
// the wgmmas reading them; a buffer is refilled only after the barrier that ends the tile, when both
// warpgroups have waited for their wgmmas on it.
#include "cuda/attention_softmax.cuh"
#include "cuda/cuda_check.h"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {
namespace {

constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kRows = kTcBlockRows;  // query rows per block, 64 per warpgroup
constexpr int kKv = 128;             // keys per tile: S is m64n128
static_assert(kRows == 64 * kWarpgroups, "a warpgroup computes 64 query rows");
// Key tiles as long as query tiles: the last (diagonal) key tile starts at the block's first query, so
// every key tile has a key at or before every query of both warpgroups and none is skipped (no branch
// around the wgmmas, which ptxas would serialise), and the running maximum is finite from tile 0 on.
static_assert(kKv == kRows, "no key tile lies wholly after a warpgroup's queries");

template <int D>
struct WgmmaSmem {
  static constexpr int kQ = kRows * D * 2;    // bytes of the Q tile
  static constexpr int kTile = kKv * D * 2;   // bytes of one K or V buffer
  static constexpr int kBytes = kQ + 4 * kTile + kSwizzleAtomBytes;  // two K, two V, alignment slack
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_forward_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k,
                         const Bf16* __restrict__ v, const int32_t* __restrict__ cu,
                         AttentionShape shape, Bf16* __restrict__ out, float* __restrict__ lse) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = WgmmaSmem<D>;
  constexpr float kNegInf = -__builtin_huge_valf();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* s_q = align_to_swizzle_atom(smem_raw);
  unsigned char* s_k = s_q + S::kQ;  // two buffers
  unsigned char* s_v = s_k + 2 * S::kTile;

  const SeqTile tile =
      locate_tile<kThreads>(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int kv_end = q_lo + q_rows, num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int64_t kv_stride = int64_t{shape.g} * D;
  const Bf16* k_seq = k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
  const Bf16* v_seq = v + (tile.start * shape.g + kv) * D;
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;

  stage_swizzled<D, kRows, kThreads>(s_q, q + ((tile.start + q_lo) * shape.h + head) * D,
                                     int64_t{shape.h} * D, q_rows, tid);
  stage_swizzled<D, kKv, kThreads>(s_k, k_seq, kv_stride, min(kKv, kv_end), tid);
  stage_swizzled<D, kKv, kThreads>(s_v, v_seq, kv_stride, min(kKv, kv_end), tid);
  cp_async_commit();

  const int wg_q_first = q_lo + 64 * wg;      // the warpgroup's first query
  const int row0 = 64 * wg + 16 * warp + lane / 4;  // this lane's first row within the tile
  const uint32_t q_tile = shared_address(s_q);
  float s[kKv / 8][4] = {};
  float o[D / 8][4] = {};
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};

  for (int t = 0; t < num_kv_tiles; ++t) {
    const int buf = t % 2;
    if (t + 1 < num_kv_tiles) {
      const int next_lo = (t + 1) * kKv;
      stage_swizzled<D, kKv, kThreads>(s_k + (1 - buf) * S::kTile, k_seq + next_lo * kv_stride,
                                       kv_stride, min(kKv, kv_end - next_lo), tid);
      stage_swizzled<D, kKv, kThreads>(s_v + (1 - buf) * S::kTile, v_seq + next_lo * kv_stride,
                                       kv_stride, min(kKv, kv_end - next_lo), tid);
      cp_async_commit();
      cp_async_wait<1>();  // tile t (and Q) landed; tile t + 1 may still be in flight
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async();
    __syncthreads();
    const int kv_lo = t * kKv;
    const uint32_t k_tile = shared_address(s_k + buf * S::kTile);
    const uint32_t v_tile = shared_address(s_v + buf * S::kTile);

    wgmma_fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<kKv, WgmmaMajor::kK>(s, k_major_descriptor(q_tile, kRows, 64 * wg, 16 * kk),
                                    k_major_descriptor(k_tile, kKv, 0, 16 * kk), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(s);

    if (kv_lo + kKv - 1 > wg_q_first) mask_causal(s, kv_lo, q_lo + row0);
    float correction[2];
    online_softmax_tile(s, m, l, scale_log2, correction);
    rescale_rows(o, correction);
    uint32_t p[kKv / 16][4];
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) c_pair_to_a(s[2 * ks], s[2 * ks + 1], p[ks]);

    wgmma_fence_operands(o);
    wgmma_fence_operands(p);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(o, p[ks], mn_major_descriptor(v_tile, kKv, 16 * ks), true);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(o);
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  finish_rows<D>(o, m, l, row0, q_rows, tile.start + q_lo, head, shape, out, lse);
#endif
}

template <int D>
void launch_wgmma_forward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                          const int32_t* cu, Bf16* out, float* lse, cudaStream_t stream) {
  constexpr int kSmem = WgmmaSmem<D>::kBytes;
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_forward_kernel<D>), kSmem);
  const dim3 grid(attention_tile_blocks(shape, kRows), shape.h);
  wgmma_forward_kernel<D><<<grid, kThreads, kSmem, stream>>>(q, k, v, cu, shape, out, lse);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void wgmma_attention_forward(const AttentionShape& shape, const void* q, const void* k,
                             const void* v, const int32_t* cu_seqlens, void* out, float* lse,
                             cudaStream_t stream) {
  const auto* qb = static_cast<const Bf16*>(q);
  const auto* kb = static_cast<const Bf16*>(k);
  const auto* vb = static_cast<const Bf16*>(v);
  auto* ob = static_cast<Bf16*>(out);
  if (shape.d == 64) {
    launch_wgmma_forward<64>(shape, qb, kb, vb, cu_seqlens, ob, lse, stream);
  } else {
    launch_wgmma_forward<128>(shape, qb, kb, vb, cu_seqlens, ob, lse, stream);
  }
}

}  // namespace dtrn::cuda
