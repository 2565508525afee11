// The bf16 tensor-core attention backward (attention.h): the dk/dv kernel and the dq kernel of the split
// backward, and the fused backward, the dk/dv kernel adding dq itself; all deterministic (each output
// element is accumulated in a fixed order; no float atomics). delta comes from attention_backward.cu's
// preprocess, lse from the forward; P and dS are rebuilt per tile by attention_backward_steps.cuh.
//
// Both kernels give each warp kM m tiles of 16 rows (2 at D = 64, 1 at D = 128, whose accumulators
// would not fit twice in the registers), so that every B fragment loaded from shared memory feeds kM
// products: with one m tile per warp, ldmatrix's shared-memory bandwidth bounded them at D = 64.
//
// dk/dv: a block owns 128 keys of one KV head, kM * 16 per warp, with K and V staged once. It walks the
// query heads of the group in order and, for each, the query tiles from the one holding the block's
// first key to the sequence end (kQ rows each, double-buffered with cp.async together with their lse
// and delta); a warp skips the steps whose queries all come before its first key. Per step and warp, in
// transposed form: S^T = K Q^T and dP^T = V dO^T, P^T masked to queries at or after the key and inside
// the sequence, dS^T = P^T (dP^T - delta), then dV += P^T dO and dK += dS^T Q with P^T and dS^T rounded
// to bf16 as A fragments. dk is scaled once at the end.
//
// dq: a block owns 128 query rows of one head and walks the causal key tiles like the forward (skipping,
// per warp, the tiles past its last query; masking only where a tile reaches past its first query):
// S = Q K^T, dP = dO V^T, dS = P (dP - delta), dQ += dS K, scaled at the end. Q and dO fragments are
// re-read from shared memory per tile rather than held, which keeps the accumulators in registers.
//
// Fused: the dk/dv kernel also writes each step's dS^T (bf16, the values its dK product used) to shared
// memory and multiplies dS K for the step's kQ queries, every warp a 16 x 32 piece; the pieces of one
// query tile from the KV tiles of its sequence are summed in f32 in global memory in KV-tile order
// (Note [Deterministic dq of the fused backward], attention_tc_fused_dq.cuh). 5 matrix products per
// (query tile, KV tile) where the split kernels do 7.
#include "cuda/attention_backward_steps.cuh"
#include "cuda/attention_tc.cuh"
#include "cuda/attention_tc_fused_dq.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

// The split of a kernel's 128 rows (keys for dk/dv, queries for dq) over its warps, and the width kN of
// the tiles it walks (queries per dk/dv step, keys per dq tile): two 16 x kN f32 score tiles per m tile
// sit next to the two (dk/dv) or one (dq) 16 x D accumulators of each m tile.
template <int D>
struct BackwardTiling {
  static constexpr int kM = D == 64 ? 2 : 1;
  static constexpr int kWarps = kTcBlockRows / (16 * kM);
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kWarpRows = 16 * kM;
  static constexpr int kDkdvQ = 32;
  static constexpr int kDqKv = D == 64 ? 32 : 64;
  static constexpr int kMinBlocks = D == 64 ? 2 : 1;
  // The fused kernel's dS^T tile in shared memory: [128 keys][kDkdvQ queries], rows padded by 8 so that
  // the 80-byte rows of an ldmatrix fall on distinct 16-byte bank groups.
  static constexpr int kDsStride = kDkdvQ + 8;
  static constexpr int kDkdvSmem =
      (2 * kTcBlockRows + 4 * kDkdvQ) * TcGeometry<D>::kStride * sizeof(Bf16) + 4 * kDkdvQ * sizeof(float);
  static constexpr int kFusedSmem = kDkdvSmem + kTcBlockRows * kDsStride * sizeof(Bf16);
};

// kFusedDq: the fused backward's kernel, which also adds the dq pieces (FusedDq).
template <int D, bool kFusedDq>
__global__ void __launch_bounds__(BackwardTiling<D>::kThreads, BackwardTiling<D>::kMinBlocks)
    tc_dkdv_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k,
                   const Bf16* __restrict__ v, const int32_t* __restrict__ cu, AttentionShape shape,
                   const float* __restrict__ lse, const Bf16* __restrict__ dout,
                   const float* __restrict__ delta, Bf16* __restrict__ dk, Bf16* __restrict__ dv,
                   FusedDq fused) {
  using G = TcGeometry<D>;
  using B = BackwardTiling<D>;
  constexpr int kM = B::kM, kThreads = B::kThreads;
  constexpr int kRows = kTcBlockRows, kQ = B::kDkdvQ;
  constexpr int kKeyTile = kRows * G::kStride, kQTile = kQ * G::kStride;
  static_assert(2 * kQ <= kThreads, "one thread stages each lse and delta");
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Bf16* s_k = reinterpret_cast<Bf16*>(smem_bytes);
  Bf16* s_v = s_k + kKeyTile;
  Bf16* s_q = s_v + kKeyTile;      // two buffers
  Bf16* s_g = s_q + 2 * kQTile;    // two buffers of dout
  float* s_lse = reinterpret_cast<float*>(s_g + 2 * kQTile);  // two buffers of kQ
  float* s_delta = s_lse + 2 * kQ;                             // two buffers of kQ
  Bf16* s_ds = reinterpret_cast<Bf16*>(s_delta + 2 * kQ);      // fused: dS^T [kRows][kDsStride]

  uint2 work = make_uint2(blockIdx.x, blockIdx.y);
  if constexpr (kFusedDq) work = take_ticket(fused.ticket);
  const SeqTile tile = [&] {
    if constexpr (kFusedDq) {
      return locate_tile_major_in_warp(cu, shape.num_seqs, shape.n, kRows, work.x,
                                       /*reverse=*/false);
    } else {
      return locate_tile<kThreads>(cu, shape.num_seqs, shape.n, kRows, work.x, /*reverse=*/false);
    }
  }();
  if (!tile.found) return;
  const int kv = static_cast<int>(work.y), group = shape.h / shape.g;
  const int k_lo = tile.tile * kRows, k_rows = min(kRows, tile.len - k_lo);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t kv_stride = int64_t{shape.g} * D, q_stride = int64_t{shape.h} * D;
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;

  const int64_t kv_offset = ((tile.start + k_lo) * shape.g + kv) * D;
  tc_stage<D, kRows, kThreads>(s_k, k + kv_offset, kv_stride, k_rows);
  tc_stage<D, kRows, kThreads>(s_v, v + kv_offset, kv_stride, k_rows);

  // Steps: (query head, query tile) pairs over the query tiles from the one holding k_lo to the
  // sequence end: heads outermost and tiles ascending, or in the fused kernel tiles descending and heads
  // innermost (the Note says why).
  const int q_first = k_lo / kQ;
  const int q_tiles = (tile.len + kQ - 1) / kQ - q_first;
  const int steps = group * q_tiles;
  const auto step_head = [&](int step) {
    return kv * group + (kFusedDq ? step % group : step / q_tiles);
  };
  const auto step_q_lo = [&](int step) {
    return (q_first + (kFusedDq ? q_tiles - 1 - step / group : step % q_tiles)) * kQ;
  };
  const auto stage_step = [&](int step, int buf) {
    const int head = step_head(step);
    const int q_lo = step_q_lo(step), q_rows = min(kQ, tile.len - q_lo);
    const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
    tc_stage<D, kQ, kThreads>(s_q + buf * kQTile, q + q_offset, q_stride, q_rows);
    tc_stage<D, kQ, kThreads>(s_g + buf * kQTile, dout + q_offset, q_stride, q_rows);
    const int64_t stat = head * shape.n + tile.start + q_lo;
    const int t = threadIdx.x % kQ;
    if (threadIdx.x < kQ) {
      cp_async_4(s_lse + buf * kQ + t, lse + stat + (t < q_rows ? t : 0), t < q_rows);
    } else if (threadIdx.x < 2 * kQ) {
      cp_async_4(s_delta + buf * kQ + t, delta + stat + (t < q_rows ? t : 0), t < q_rows);
    }
  };
  stage_step(0, 0);
  cp_async_commit();

  const int warp_k_first = k_lo + warp * B::kWarpRows;  // the warp's first key
  const int key0 = warp_k_first + lane / 4;  // this lane's keys: key0 + 16 mi and 8 below each
  float dk_acc[kM][G::kDTiles][4] = {}, dv_acc[kM][G::kDTiles][4] = {};
  DqCounter dq_counter;
  for (int step = 0; step < steps; ++step) {
    const int buf = step % 2;
    if (step + 1 < steps) {
      stage_step(step + 1, 1 - buf);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int q_lo = step_q_lo(step), q_rows = min(kQ, tile.len - q_lo);
    int32_t* counter = nullptr;  // fused: the query tile's counter
    if constexpr (kFusedDq) {
      counter = fused.counters + step_head(step) * shape.n + tile.start + q_lo;
      dq_counter.peek(counter);
    }
    float p[kM][kQ / 8][4] = {}, ds[kM][kQ / 8][4] = {};
    // A step whose queries all come before the warp's first key adds nothing (dS^T stays 0).
    if (q_lo + kQ - 1 >= warp_k_first) {
      const Bf16* sq = s_q + buf * kQTile;
      const Bf16* sg = s_g + buf * kQTile;
      const float* sl = s_lse + buf * kQ;
      const float* sd = s_delta + buf * kQ;
      mma_rows_by_rows_m<D, kM, kQ>(p, s_k, warp * B::kWarpRows, sq);   // S^T
      mma_rows_by_rows_m<D, kM, kQ>(ds, s_v, warp * B::kWarpRows, sg);  // dP^T
      // Only a step that reaches below the warp's last key or past the sequence end needs the mask,
      // applied in its own pass (as in the forward) as S = -inf, hence P = 0.
      if (q_lo < warp_k_first + B::kWarpRows - 1 || q_rows < kQ) {
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) mask_queries_before_keys(p[mi], key0 + mi * 16, q_lo, q_rows);
      }
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        probabilities_by_column(p[mi], scale_log2, sl);
        score_gradients_by_column(p[mi], ds[mi], sd);
      }
      mma_regs_by_tile_m<D, kM, kQ>(dv_acc, p, sg);
      mma_regs_by_tile_m<D, kM, kQ>(dk_acc, ds, sq);
    }
    if constexpr (kFusedDq) {
      store_ds_transposed<kM, kQ, B::kDsStride>(s_ds, warp * B::kWarpRows, ds);
      dq_counter.send_pending();
      // This block is addition number tile.tile to the query tile; the last comes from the KV tile
      // holding the query tile's last row.
      dq_counter.wait(counter, tile.tile);
      __syncthreads();  // s_ds is complete, and the additions before this one are visible
      const bool last = tile.tile == (q_lo + q_rows - 1) / kRows;
      add_dq_piece<D, kQ, B::kWarps, B::kDsStride>(s_ds, s_k, fused, shape, step_head(step),
                                                   tile.start + q_lo, q_rows, tile.tile, last);
      dq_counter.pending = counter;
      dq_counter.pending_value = tile.tile + 1;
    }
    __syncthreads();  // this buffer (and s_ds) is refilled by the next iteration
  }
  if constexpr (kFusedDq) dq_counter.send_pending();

  const float scale = static_cast<float>(shape.scale);
  const float dk_factor[2] = {scale, scale}, dv_factor[2] = {1.f, 1.f};
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
    Bf16* dk_dst[2];
    Bf16* dv_dst[2];
    bool valid[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warp * B::kWarpRows + mi * 16 + lane / 4 + half * 8;
      const int64_t offset = ((tile.start + k_lo + row) * shape.g + kv) * D;
      valid[half] = row < k_rows;
      dk_dst[half] = dk + offset;
      dv_dst[half] = dv + offset;
    }
    store_rows<D>(dk_acc[mi], dk_factor, dk_dst, valid);
    store_rows<D>(dv_acc[mi], dv_factor, dv_dst, valid);
  }
}

template <int D>
__global__ void __launch_bounds__(BackwardTiling<D>::kThreads, BackwardTiling<D>::kMinBlocks)
    tc_dq_kernel(const Bf16* __restrict__ q, const Bf16* __restrict__ k, const Bf16* __restrict__ v,
                 const int32_t* __restrict__ cu, AttentionShape shape, const float* __restrict__ lse,
                 const Bf16* __restrict__ dout, const float* __restrict__ delta,
                 Bf16* __restrict__ dq) {
  using G = TcGeometry<D>;
  using B = BackwardTiling<D>;
  constexpr int kM = B::kM, kThreads = B::kThreads;
  constexpr int kRows = kTcBlockRows, kKv = B::kDqKv;
  constexpr int kTile = kKv * G::kStride;  // one K or V buffer
  constexpr float kInf = __builtin_huge_valf();
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Bf16* s_q = reinterpret_cast<Bf16*>(smem_bytes);
  Bf16* s_g = s_q + kRows * G::kStride;  // dout
  Bf16* s_k = s_g + kRows * G::kStride;  // two buffers
  Bf16* s_v = s_k + 2 * kTile;           // two buffers

  const SeqTile tile =
      locate_tile<kThreads>(cu, shape.num_seqs, shape.n, kRows, blockIdx.x, /*reverse=*/true);
  if (!tile.found) return;
  const int head = blockIdx.y, kv = head / (shape.h / shape.g);
  const int q_lo = tile.tile * kRows, q_rows = min(kRows, tile.len - q_lo);
  const int kv_end = q_lo + q_rows, num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t kv_stride = int64_t{shape.g} * D;
  const Bf16* k_seq = k + (tile.start * shape.g + kv) * D;
  const Bf16* v_seq = v + (tile.start * shape.g + kv) * D;
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;

  const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
  tc_stage<D, kRows, kThreads>(s_q, q + q_offset, int64_t{shape.h} * D, q_rows);
  tc_stage<D, kRows, kThreads>(s_g, dout + q_offset, int64_t{shape.h} * D, q_rows);
  tc_stage<D, kKv, kThreads>(s_k, k_seq, kv_stride, min(kKv, kv_end));
  tc_stage<D, kKv, kThreads>(s_v, v_seq, kv_stride, min(kKv, kv_end));
  cp_async_commit();

  const int row0 = warp * B::kWarpRows + lane / 4;  // this lane's rows: row0 + 16 mi and 8 below each
  const int warp_q_first = q_lo + warp * B::kWarpRows;
  // Rows past the sequence end get lse = +inf, hence P = 0, and are never stored.
  float lse_log2[kM][2], row_delta[kM][2];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + mi * 16 + half * 8;
      const int64_t stat = head * shape.n + tile.start + q_lo + row;
      lse_log2[mi][half] = row < q_rows ? lse[stat] * kLog2e : kInf;
      row_delta[mi][half] = row < q_rows ? delta[stat] : 0.f;
    }
  }

  float dq_acc[kM][G::kDTiles][4] = {};
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
    // A tile whose keys all come after the warp's last query adds nothing.
    if (kv_lo <= warp_q_first + B::kWarpRows - 1) {
      const Bf16* sk = s_k + buf * kTile;
      const Bf16* sv = s_v + buf * kTile;
      float p[kM][kKv / 8][4] = {}, ds[kM][kKv / 8][4] = {};
      mma_rows_by_rows_m<D, kM, kKv>(p, s_q, warp * B::kWarpRows, sk);   // S
      mma_rows_by_rows_m<D, kM, kKv>(ds, s_g, warp * B::kWarpRows, sv);  // dP
      // Only a tile whose last key comes after the warp's first query needs the mask.
      if (kv_lo + kKv - 1 > warp_q_first) {
#pragma unroll
        for (int mi = 0; mi < kM; ++mi) mask_causal(p[mi], kv_lo, q_lo + row0 + mi * 16);
      }
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        probabilities_by_row(p[mi], scale_log2, lse_log2[mi]);
        score_gradients_by_row(p[mi], ds[mi], row_delta[mi]);
      }
      mma_regs_by_tile_m<D, kM, kKv>(dq_acc, ds, sk);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's prefetch
  }

  const float scale = static_cast<float>(shape.scale);
  const float factor[2] = {scale, scale};
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
    Bf16* dst[2];
    bool valid[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + mi * 16 + half * 8;
      valid[half] = row < q_rows;
      dst[half] = dq + ((tile.start + q_lo + row) * shape.h + head) * D;
    }
    store_rows<D>(dq_acc[mi], factor, dst, valid);
  }
}

// The fused kernel's view of its workspace: the f32 sums, then the counters and the ticket.
FusedDq fused_layout(const AttentionShape& shape, void* workspace, Bf16* dq) {
  FusedDq fused;
  fused.sums = static_cast<float*>(workspace);
  fused.counters = reinterpret_cast<int32_t*>(fused.sums + shape.n * shape.h * shape.d);
  fused.ticket = fused.counters + shape.n * shape.h;
  fused.dq = dq;
  return fused;
}

template <int D>
void launch_tc_backward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                        const int32_t* cu, const float* lse, const Bf16* dout, const float* delta,
                        Bf16* dq, Bf16* dk, Bf16* dv, void* fused_workspace, cudaStream_t stream) {
  using B = BackwardTiling<D>;
  const dim3 key_grid(attention_tile_blocks(shape, kTcBlockRows), shape.g);
  if (fused_workspace != nullptr) {
    const FusedDq fused = fused_layout(shape, fused_workspace, dq);
    // The counters and the ticket start at 0; the sums need no zeroing (the Note).
    CUDA_CHECK(
        cudaMemsetAsync(fused.counters, 0, (shape.n * shape.h + 1) * sizeof(int32_t), stream));
    allow_shared_memory(reinterpret_cast<const void*>(&tc_dkdv_kernel<D, true>), B::kFusedSmem);
    tc_dkdv_kernel<D, true><<<key_grid, B::kThreads, B::kFusedSmem, stream>>>(
        q, k, v, cu, shape, lse, dout, delta, dk, dv, fused);
    CUDA_CHECK_LAUNCH();
    return;
  }
  allow_shared_memory(reinterpret_cast<const void*>(&tc_dkdv_kernel<D, false>), B::kDkdvSmem);
  tc_dkdv_kernel<D, false><<<key_grid, B::kThreads, B::kDkdvSmem, stream>>>(
      q, k, v, cu, shape, lse, dout, delta, dk, dv, FusedDq{});
  CUDA_CHECK_LAUNCH();
  constexpr int kDqSmem = (2 * kTcBlockRows + 4 * B::kDqKv) * TcGeometry<D>::kStride * sizeof(Bf16);
  allow_shared_memory(reinterpret_cast<const void*>(&tc_dq_kernel<D>), kDqSmem);
  tc_dq_kernel<D><<<dim3(attention_tile_blocks(shape, kTcBlockRows), shape.h), B::kThreads,
                    kDqSmem, stream>>>(q, k, v, cu, shape, lse, dout, delta, dq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t tensor_core_fused_workspace_bytes(const AttentionShape& shape) {
  return static_cast<size_t>(shape.n) * shape.h * shape.d * sizeof(float) +
         (static_cast<size_t>(shape.n) * shape.h + 1) * sizeof(int32_t);
}

void tensor_core_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                                    const void* v, const int32_t* cu_seqlens, const float* lse,
                                    const void* dout, const float* delta, void* dq, void* dk,
                                    void* dv, void* fused_workspace, cudaStream_t stream) {
  const auto* qb = static_cast<const Bf16*>(q);
  const auto* kb = static_cast<const Bf16*>(k);
  const auto* vb = static_cast<const Bf16*>(v);
  const auto* gb = static_cast<const Bf16*>(dout);
  auto* dqb = static_cast<Bf16*>(dq);
  auto* dkb = static_cast<Bf16*>(dk);
  auto* dvb = static_cast<Bf16*>(dv);
  if (shape.d == 64) {
    launch_tc_backward<64>(shape, qb, kb, vb, cu_seqlens, lse, gb, delta, dqb, dkb, dvb,
                           fused_workspace, stream);
  } else {
    launch_tc_backward<128>(shape, qb, kb, vb, cu_seqlens, lse, gb, delta, dqb, dkb, dvb,
                            fused_workspace, stream);
  }
}

}  // namespace dtrn::cuda
