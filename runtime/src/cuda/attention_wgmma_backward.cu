// The bf16 attention backward on Hopper's warpgroup MMA (wgmma.cuh; sm_90a only, wgmma_support.h): the
// split backward of attention_tc_backward.cu, a dk/dv kernel and a dq kernel, with the same inputs (the
// forward's lse, delta from attention_backward.cu's preprocess) and outputs, and as deterministic (each
// output element accumulated in registers in a fixed order; no atomics). Per-tile steps:
// attention_backward_steps.cuh.
//
// Both kernels run two warpgroups of 64 rows each (128 keys or 128 queries per block), operands in the
// swizzled layout of Note [wgmma operand layout: 128-byte swizzle], staged by all 256 threads with
// cp.async into kStages buffers: the tiles of the next kStages - 1 steps load while this one's are
// computed on (shared memory is not what limits these blocks to one per SM; registers are). Each tile
// serves as a K-major operand in one product and as an MN-major B in another, so nothing is staged
// twice. Per step and warpgroup the products are issued in commit groups in the order their results
// are needed, and each wait lets the latest group run on: P is computed while the product giving dP
// runs, and (dk/dv) dS while dV's runs. Accumulators are read only after the wait for their group; the
// two warpgroups also overlap each other's waits.
//
// dk/dv: a block owns 128 keys of one KV head, K and V staged once. It walks the query heads of the
// group in order and, for each, the query tiles of kDkdvQ = 64 from the one holding the block's first
// key to the sequence end (Q, dO, lse and delta per step). Per step, in transposed form:
//   S^T = K Q^T and dP^T = V dO^T: SS m64n64k16, A the warpgroup's 64 rows of K or V, B the Q or dO
//     tile K-major (its rows are queries, N here);
//   P^T masked where a query precedes a key or lies past the sequence end, dS^T = P^T (dP^T - delta);
//   dV += P^T dO and dK += dS^T Q: RS m64nDk16, P^T and dS^T rounded to bf16 in registers as the A
//     operand (Note [wgmma m64nNk16 fragments]), B the dO or Q tile MN-major (its rows are queries, K
//     of this product, its D columns N).
// A warpgroup computes every step of its block, also the first, whose queries all precede the second
// warpgroup's keys (masked to P = 0): skipping it would put the wgmmas under a branch that ptxas
// serialises, to save one step per query head and block. dk is scaled once at the end.
//
// dq: a block owns 128 query rows of one head (Q and dO staged once) and walks the causal key tiles of
// DqTiling::kKv keys in order: S = Q K^T and dP = dO V^T (SS, Q and dO K-major A, K and V K-major B),
// P masked only on tiles that reach past the warpgroup's first query, dS = P (dP - delta), then
// dQ += dS K (RS, dS in registers, B the K tile MN-major). dq is scaled once at the end. With tiles of
// 64 keys (D = 128) the last one lies wholly after the first warpgroup's queries; that warpgroup
// computes it masked to P = 0 for the same reason.
#include "cuda/attention_backward_steps.cuh"
#include "cuda/cuda_check.h"
#include "cuda/wgmma.cuh"

namespace dtrn::cuda {
namespace {

constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kRows = kTcBlockRows;  // keys (dk/dv) or queries (dq) per block, 64 per warpgroup
static_assert(kRows == 64 * kWarpgroups, "a warpgroup computes 64 rows");
constexpr int kDkdvQ = 64;  // queries per dk/dv step: S^T and dP^T are m64n64 (32 registers each)
constexpr int kStages = 3;  // buffers of the tiles that change per step (Q, dO for dk/dv; K, V for dq)

template <int D>
struct DkdvSmem {
  static constexpr int kKeys = kRows * D * 2;    // bytes of the K or the V tile
  static constexpr int kQTile = kDkdvQ * D * 2;  // bytes of one Q or dO buffer
  static constexpr int kStats = kDkdvQ * 4;      // bytes of one lse or delta buffer
  static constexpr int kBytes = 2 * kKeys + 2 * kStages * (kQTile + kStats) + kSwizzleAtomBytes;
};

// The dq kernel's key tiles: S and dP are m64nKv, next to dQ's D / 2 registers per thread; 128 keys
// at D = 64 (64 + 64 + 32 accumulator registers), 64 at D = 128 (32 + 32 + 64).
template <int D>
struct DqTiling {
  static constexpr int kKv = D == 64 ? 128 : 64;
  static constexpr int kQBytes = kRows * D * 2;  // bytes of the Q or the dO tile
  static constexpr int kTile = kKv * D * 2;      // bytes of one K or V buffer
  static constexpr int kBytes = 2 * kQBytes + 2 * kStages * kTile + kSwizzleAtomBytes;
};

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_dkdv_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k,
                      const Bf16* __restrict__ v, const int32_t* __restrict__ cu, AttentionShape shape,
                      const float* __restrict__ lse, const Bf16* __restrict__ dout,
                      const float* __restrict__ delta, Bf16* __restrict__ dk, Bf16* __restrict__ dv) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using S = DkdvSmem<D>;
  constexpr int kQ = kDkdvQ;
  static_assert(2 * kQ <= kThreads, "one thread stages each lse and delta");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* s_k = align_to_swizzle_atom(smem_raw);
  unsigned char* s_v = s_k + S::kKeys;
  unsigned char* s_q = s_v + S::kKeys;             // kStages buffers
  unsigned char* s_g = s_q + kStages * S::kQTile;  // kStages buffers of dout
  float* s_lse = reinterpret_cast<float*>(s_g + kStages * S::kQTile);  // kStages buffers of kQ
  float* s_delta = s_lse + kStages * kQ;                               // kStages buffers of kQ

  const SeqTile tile =
      locate_tile<kThreads>(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/false);
  if (!tile.found) return;
  const int kv = blockIdx.y, group = shape.h / shape.g;
  const int k_lo = tile.tile * kRows, k_rows = min(kRows, tile.len - k_lo);
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int64_t kv_stride = int64_t{shape.g} * D, q_stride = int64_t{shape.h} * D;
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;

  const int64_t kv_offset = ((tile.start + k_lo) * shape.g + kv) * D;
  stage_swizzled<D, kRows, kThreads>(s_k, k + kv_offset, kv_stride, k_rows, tid);
  stage_swizzled<D, kRows, kThreads>(s_v, v + kv_offset, kv_stride, k_rows, tid);

  // Steps: (query head, query tile), heads outermost, tiles ascending from the one holding k_lo.
  const int q_first = k_lo / kQ;
  const int q_tiles = (tile.len + kQ - 1) / kQ - q_first;
  const int steps = group * q_tiles;
  const auto step_q_lo = [&](int step) { return (q_first + step % q_tiles) * kQ; };
  const auto stage_step = [&](int step, int buf) {
    const int head = kv * group + step / q_tiles;
    const int q_lo = step_q_lo(step), q_rows = min(kQ, tile.len - q_lo);
    const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
    stage_swizzled<D, kQ, kThreads>(s_q + buf * S::kQTile, q + q_offset, q_stride, q_rows, tid);
    stage_swizzled<D, kQ, kThreads>(s_g + buf * S::kQTile, dout + q_offset, q_stride, q_rows, tid);
    const int64_t stat = head * shape.n + tile.start + q_lo;
    const int t = tid % kQ;
    if (tid < kQ) {
      cp_async_4(s_lse + buf * kQ + t, lse + stat + (t < q_rows ? t : 0), t < q_rows);
    } else if (tid < 2 * kQ) {
      cp_async_4(s_delta + buf * kQ + t, delta + stat + (t < q_rows ? t : 0), t < q_rows);
    }
  };
  // One commit group per step, empty past the last, so that waiting for all but the newest
  // kStages - 1 groups always means this step's tiles (the first group also holds K and V).
  for (int step = 0; step < kStages - 1; ++step) {
    if (step < steps) stage_step(step, step);
    cp_async_commit();
  }

  const int wg_k_first = k_lo + 64 * wg;               // the warpgroup's first key
  const int key0 = wg_k_first + 16 * warp + lane / 4;  // this lane's keys: key0 and key0 + 8
  const uint32_t k_tile = shared_address(s_k), v_tile = shared_address(s_v);
  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  for (int step = 0; step < steps; ++step) {
    const int buf = step % kStages, ahead = step + kStages - 1;
    if (ahead < steps) stage_step(ahead, ahead % kStages);  // into the buffer of step - 1
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    fence_proxy_async();
    __syncthreads();
    const int q_lo = step_q_lo(step), q_rows = min(kQ, tile.len - q_lo);
    const uint32_t q_tile = shared_address(s_q + buf * S::kQTile);
    const uint32_t g_tile = shared_address(s_g + buf * S::kQTile);

    // Zeroed here rather than carried over, so that their registers are free outside the products.
    float p[kQ / 8][4] = {}, ds[kQ / 8][4] = {};  // S^T, then P^T; dP^T, then dS^T
    wgmma_fence_operands(p);
    wgmma_fence_operands(ds);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<kQ, WgmmaMajor::kK>(p, k_major_descriptor(k_tile, kRows, 64 * wg, 16 * kk),
                                   k_major_descriptor(q_tile, kQ, 0, 16 * kk), kk > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<kQ, WgmmaMajor::kK>(ds, k_major_descriptor(v_tile, kRows, 64 * wg, 16 * kk),
                                   k_major_descriptor(g_tile, kQ, 0, 16 * kk), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<1>();  // S^T landed; dP^T may still run
    wgmma_fence_operands(p);

    // Only a step with a query before the warpgroup's last key or past the sequence end needs the mask.
    if (q_lo < wg_k_first + 63 || q_rows < kQ) mask_queries_before_keys(p, key0, q_lo, q_rows);
    probabilities_by_column(p, scale_log2, s_lse + buf * kQ);
    uint32_t p_a[kQ / 16][4];
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) c_pair_to_a(p[2 * ks], p[2 * ks + 1], p_a[ks]);
    wgmma_fence_operands(dv_acc);
    wgmma_fence_operands(p_a);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(dv_acc, p_a[ks], mn_major_descriptor(g_tile, kQ, 16 * ks), true);
    }
    wgmma_commit();
    wgmma_wait<1>();  // dP^T landed; dV may still run
    wgmma_fence_operands(ds);

    score_gradients_by_column(p, ds, s_delta + buf * kQ);
    uint32_t ds_a[kQ / 16][4];
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) c_pair_to_a(ds[2 * ks], ds[2 * ks + 1], ds_a[ks]);
    wgmma_fence_operands(dk_acc);
    wgmma_fence_operands(ds_a);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(dk_acc, ds_a[ks], mn_major_descriptor(q_tile, kQ, 16 * ks), true);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(dv_acc);
    wgmma_fence_operands(dk_acc);
    wgmma_fence_operands(p_a);
    wgmma_fence_operands(ds_a);
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  const float scale = static_cast<float>(shape.scale);
  const float dk_factor[2] = {scale, scale}, dv_factor[2] = {1.f, 1.f};
  Bf16* dk_dst[2];
  Bf16* dv_dst[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = 64 * wg + 16 * warp + lane / 4 + 8 * half;
    const int64_t offset = ((tile.start + k_lo + row) * shape.g + kv) * D;
    valid[half] = row < k_rows;
    dk_dst[half] = dk + offset;
    dv_dst[half] = dv + offset;
  }
  store_rows<D>(dk_acc, dk_factor, dk_dst, valid);
  store_rows<D>(dv_acc, dv_factor, dv_dst, valid);
#endif
}

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_dq_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k, const Bf16* __restrict__ v,
                    const int32_t* __restrict__ cu, AttentionShape shape, const float* __restrict__ lse,
                    const Bf16* __restrict__ dout, const float* __restrict__ delta,
                    Bf16* __restrict__ dq) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using T = DqTiling<D>;
  constexpr int kKv = T::kKv;
  constexpr float kInf = __builtin_huge_valf();
  extern __shared__ unsigned char smem_raw[];
  unsigned char* s_q = align_to_swizzle_atom(smem_raw);
  unsigned char* s_g = s_q + T::kQBytes;  // dout
  unsigned char* s_k = s_g + T::kQBytes;          // kStages buffers
  unsigned char* s_v = s_k + kStages * T::kTile;  // kStages buffers

  const SeqTile tile =
      locate_tile<kThreads>(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int kv_end = q_lo + q_rows, num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int64_t kv_stride = int64_t{shape.g} * D, q_stride = int64_t{shape.h} * D;
  const Bf16* k_seq = k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
  const Bf16* v_seq = v + (tile.start * shape.g + kv) * D;
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;

  const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
  const auto stage_tile = [&](int t, int buf) {
    const int kv_lo = t * kKv;
    stage_swizzled<D, kKv, kThreads>(s_k + buf * T::kTile, k_seq + kv_lo * kv_stride, kv_stride,
                                     min(kKv, kv_end - kv_lo), tid);
    stage_swizzled<D, kKv, kThreads>(s_v + buf * T::kTile, v_seq + kv_lo * kv_stride, kv_stride,
                                     min(kKv, kv_end - kv_lo), tid);
  };
  stage_swizzled<D, kRows, kThreads>(s_q, q + q_offset, q_stride, q_rows, tid);
  stage_swizzled<D, kRows, kThreads>(s_g, dout + q_offset, q_stride, q_rows, tid);
  // One commit group per key tile, empty past the last (as in the dk/dv kernel); Q and dO in the first.
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < num_kv_tiles) stage_tile(t, t);
    cp_async_commit();
  }

  const int wg_q_first = q_lo + 64 * wg;            // the warpgroup's first query
  const int row0 = 64 * wg + 16 * warp + lane / 4;  // this lane's rows: row0 and row0 + 8
  // Rows past the sequence end get lse = +inf, hence P = 0, and are never stored.
  float lse_log2[2], row_delta[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + 8 * half;
    const int64_t stat = head * shape.n + tile.start + q_lo + row;
    lse_log2[half] = row < q_rows ? lse[stat] * kLog2e : kInf;
    row_delta[half] = row < q_rows ? delta[stat] : 0.f;
  }

  const uint32_t q_tile = shared_address(s_q), g_tile = shared_address(s_g);
  float dq_acc[D / 8][4] = {};
  for (int t = 0; t < num_kv_tiles; ++t) {
    const int buf = t % kStages, ahead = t + kStages - 1;
    if (ahead < num_kv_tiles) stage_tile(ahead, ahead % kStages);  // into the buffer of tile t - 1
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    fence_proxy_async();
    __syncthreads();
    const int kv_lo = t * kKv;
    const uint32_t k_tile = shared_address(s_k + buf * T::kTile);
    const uint32_t v_tile = shared_address(s_v + buf * T::kTile);

    float p[kKv / 8][4] = {}, ds[kKv / 8][4] = {};  // S, then P; dP, then dS
    wgmma_fence_operands(p);
    wgmma_fence_operands(ds);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<kKv, WgmmaMajor::kK>(p, k_major_descriptor(q_tile, kRows, 64 * wg, 16 * kk),
                                    k_major_descriptor(k_tile, kKv, 0, 16 * kk), kk > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      wgmma_ss<kKv, WgmmaMajor::kK>(ds, k_major_descriptor(g_tile, kRows, 64 * wg, 16 * kk),
                                    k_major_descriptor(v_tile, kKv, 0, 16 * kk), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<1>();  // S landed; dP may still run
    wgmma_fence_operands(p);

    // Only a tile whose last key comes after the warpgroup's first query needs the mask.
    if (kv_lo + kKv - 1 > wg_q_first) mask_causal(p, kv_lo, q_lo + row0);
    probabilities_by_row(p, scale_log2, lse_log2);
    wgmma_wait<0>();
    wgmma_fence_operands(ds);
    score_gradients_by_row(p, ds, row_delta);
    uint32_t ds_a[kKv / 16][4];
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) c_pair_to_a(ds[2 * ks], ds[2 * ks + 1], ds_a[ks]);

    wgmma_fence_operands(dq_acc);
    wgmma_fence_operands(ds_a);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(dq_acc, ds_a[ks], mn_major_descriptor(k_tile, kKv, 16 * ks), true);
    }
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_fence_operands(dq_acc);
    wgmma_fence_operands(ds_a);
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  const float scale = static_cast<float>(shape.scale);
  const float factor[2] = {scale, scale};
  Bf16* dst[2];
  bool valid[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + 8 * half;
    valid[half] = row < q_rows;
    dst[half] = dq + ((tile.start + q_lo + row) * shape.h + head) * D;
  }
  store_rows<D>(dq_acc, factor, dst, valid);
#endif
}

template <int D>
void launch_wgmma_backward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                           const int32_t* cu, const float* lse, const Bf16* dout, const float* delta,
                           Bf16* dq, Bf16* dk, Bf16* dv, cudaStream_t stream) {
  constexpr int kDkdvSmem = DkdvSmem<D>::kBytes, kDqSmem = DqTiling<D>::kBytes;
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_dkdv_kernel<D>), kDkdvSmem);
  wgmma_dkdv_kernel<D><<<dim3(attention_tile_blocks(shape, kRows), shape.g), kThreads, kDkdvSmem,
                         stream>>>(q, k, v, cu, shape, lse, dout, delta, dk, dv);
  CUDA_CHECK_LAUNCH();
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_dq_kernel<D>), kDqSmem);
  wgmma_dq_kernel<D><<<dim3(attention_tile_blocks(shape, kRows), shape.h), kThreads, kDqSmem,
                       stream>>>(q, k, v, cu, shape, lse, dout, delta, dq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void wgmma_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                              const void* v, const int32_t* cu_seqlens, const float* lse,
                              const void* dout, const float* delta, void* dq, void* dk, void* dv,
                              cudaStream_t stream) {
  const auto* qb = static_cast<const Bf16*>(q);
  const auto* kb = static_cast<const Bf16*>(k);
  const auto* vb = static_cast<const Bf16*>(v);
  const auto* gb = static_cast<const Bf16*>(dout);
  auto* dqb = static_cast<Bf16*>(dq);
  auto* dkb = static_cast<Bf16*>(dk);
  auto* dvb = static_cast<Bf16*>(dv);
  if (shape.d == 64) {
    launch_wgmma_backward<64>(shape, qb, kb, vb, cu_seqlens, lse, gb, delta, dqb, dkb, dvb, stream);
  } else {
    launch_wgmma_backward<128>(shape, qb, kb, vb, cu_seqlens, lse, gb, delta, dqb, dkb, dvb, stream);
  }
}

}  // namespace dtrn::cuda
