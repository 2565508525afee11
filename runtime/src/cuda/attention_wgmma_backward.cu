// The bf16 attention backward on Hopper's warpgroup MMA (wgmma.cuh; sm_90a only, wgmma_support.h): the
// split backward of attention_tc_backward.cu, a dk/dv kernel and a dq kernel, with the same inputs (the
// forward's lse, delta from attention_backward.cu's preprocess) and outputs, and as deterministic (each
// output element accumulated in registers in a fixed order; no atomics); and at D = 64 the fused
// backward, the dk/dv kernel computing dq's pieces too (Note [wgmma fused dq]). Per-tile steps:
// attention_backward_steps.cuh.
//
// Both kernels are warp-specialized as the forward is (FlashAttention-3; attention_wgmma_forward.cu):
// a block of 384 threads is two consumer warpgroups of 64 rows each (128 keys or 128 queries per
// block) and a producer warpgroup that copies the tiles into shared memory by cp.async, in the
// swizzled layout of Note [wgmma operand layout: 128-byte swizzle]: the block's fixed tiles once,
// with the first step's, and each step's tiles into a ring of kStages stages whose full and empty
// mbarriers follow Note [load ring protocol] (load g = step g of the block). The consumers never
// issue a load and never wait at a block-wide barrier. Each tile serves as a K-major operand in one
// product and as an MN-major B in another, so nothing is staged twice.
//
// dk/dv: a block owns 128 keys of one KV head; K and V are loaded once. It walks the query heads of
// the group in order and, for each, the query tiles of kDkdvQ = 64 from the one holding the block's
// first key to the sequence end (a step's load: Q, dO, lse and delta). Per step, in transposed form:
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
// dq: a block owns 128 query rows of one head (Q and dO loaded once) and walks the causal key tiles of
// DqTiling::kKv keys in order (a step's load: K and V): S = Q K^T and dP = dO V^T (SS, Q and dO
// K-major A, K and V K-major B), P masked only on tiles that reach past the warpgroup's first query,
// dS = P (dP - delta), then dQ += dS K (RS, dS in registers, B the K tile MN-major). dq is scaled once
// at the end. With tiles of 64 keys (D = 128) the last one lies wholly after the first warpgroup's
// queries; that warpgroup computes it masked to P = 0 for the same reason.
//
// Note [wgmma backward overlap]
// Per step a consumer warpgroup issues its products in commit groups in the order their results are
// needed, and each wgmma_wait lets the newest group run on: P is computed while the product giving dP
// runs, and (dk/dv at D = 64) dS while dV's runs. The last product of a step (dK, or dQ) is not
// issued in that step but in the next one, in front of its S and dP, whose first wait (all groups but
// dP's) returns once it and S are done: the tensor cores get three products at once, and the wait for
// the next load's full barrier runs before them rather than between them. The consumer frees a
// step's stage only then (that product reads its Q or K tile), so it holds two stages at once, which
// the ring allows (Note [load ring protocol]). No wgmma of a warpgroup is in flight
// across a step's end: with dK left running into the next step, ptxas serialised every wgmma of the
// kernel (its warning C7515: registers of a wgmma in flight written by other instructions).
// Registers per consumer thread, accumulators and bf16 A operands: dk/dv D + 64 (S^T, dP^T) + 16
// (the carried dS^T) around the first wait and D + 80 while dS^T is computed, plus P^T's 16 where dV
// still runs then (D = 64 only: at D = 128 the 224 left ptxas too few of the consumers' 240 for its
// addresses, and it serialised the wgmmas instead of spilling); dq 192 (D = 64, tiles of 128 keys)
// or 144 (D = 128, tiles of 64). The forward also hands the tensor cores back and forth between its
// warpgroups through named barriers (Note [wgmma forward overlap]), because its softmax costs as
// long as its MMAs (two products per exponential at D = 64); a backward step has four products per
// exponential in dk/dv (three in dq) and no running maximum, so the two warpgroups are left to
// interleave freely and the kernels use no named barrier. Which warpgroup runs first changes no
// output bit.
//
// Note [wgmma fused dq]
// The split backward computes S and dP twice, once per kernel: 7 products per tile pair where 5 do. The
// fused dk/dv kernel (kFusedDq, D = 64) also computes, per step, the dq piece dS K of the step's 64
// queries over the block's 128 keys, and adds it to fixed-point sums that every block reaching those
// queries adds to (Note [Deterministic dq in fixed point], attention_dq_sums.cuh); a kernel after it
// turns the sums into dq. dS^T lives in two warpgroups' registers (each its 64 keys), and the piece
// needs all 128 keys: each warpgroup stores its dS^T, already rounded to bf16 for dK, to shared memory
// (a 128 x 64 tile in the layout of Note [wgmma operand layout: 128-byte swizzle], two of them by step
// parity), and in the next step, once the other warpgroup's half is there (a named barrier per
// warpgroup and parity: one arrives, the other syncs), computes its 32 of the 64 head dims:
// m64n32k16 over the 128 keys, A = dS from the stored dS^T (MN-major, the transpose flag), B = the K
// tile (MN-major, 64 bytes into its lines for the second half). The piece is issued beside the step
// before's dK (Note [wgmma backward overlap]), converted to fixed point with its rows' factors (loaded
// with lse and delta) into one of three staging buffers of the warpgroup, and one thread adds the 8 KB
// to the sums by a bulk reduction (cp.reduce.async.bulk .add.s32), then waits until the one before has
// read its buffer: three buffers keep a buffer's next stores behind that wait and a barrier. Why the
// two waits are safe: a warpgroup stores dS^T of step s + 2 into the buffer of step s only after it
// synced on the other's dS^T of step s + 1, which the other published after its own piece of step s
// had landed; and it arrives at the barrier of parity p again (step s + 2) only after the other synced
// there for step s. dk and dv are the split kernel's, bit for bit (the same products in the same
// order). At 2 x 8192 (15 heads, 5 KV heads) the backward took 1.89-1.93 ms against the split kernels'
// 2.05-2.10 (bench/RESULTS.md). Measured and not kept: each warpgroup's piece over its own 64 keys
// and all 64 head dims (no barrier between the warpgroups, twice the bulk reductions): 2.06 ms.
//
// Registers: ptxas gives every warpgroup of the 384-thread block the same count at launch, at most
// 65536 / 384 -> 168, under the accumulators above. The producer needs few (addresses, the step
// walk), so it releases all but kProducerRegisters and the consumers claim kConsumerRegisters
// (setmaxnreg, warp_specialization.cuh).
#include <type_traits>

#include "cuda/attention_backward_steps.cuh"
#include "cuda/attention_dq_sums.cuh"
#include "cuda/cuda_check.h"
#include "cuda/load_ring.cuh"

namespace dtrn::cuda {
namespace {

constexpr int kConsumerThreads = 256;  // two warpgroups
constexpr int kProducerThreads = 128;  // one warpgroup
constexpr int kThreads = kConsumerThreads + kProducerThreads;
constexpr int kConsumerWarps = kConsumerThreads / 32;
constexpr int kRows = kTcBlockRows;  // keys (dk/dv) or queries (dq) per block, 64 per warpgroup
static_assert(kRows == 64 * (kConsumerThreads / 128), "a consumer warpgroup computes 64 rows");
constexpr int kDkdvQ = 64;  // queries per dk/dv step: S^T and dP^T are m64n64 (32 registers each)
static_assert(2 * kDkdvQ == kProducerThreads, "a producer thread copies one lse or delta a step");
// Stages of the tiles that change per step (Q, dO, lse and delta for dk/dv; K and V for dq). Four, one
// more than the forward's: a backward step is shorter than a forward key tile (a dk/dv step is 64
// queries) and a consumer holds two stages at once (Note [load ring protocol]), so two loads are in
// flight ahead of it, and shared memory allows it at both head dims (one block per SM either way, for
// its registers).
constexpr int kStages = 4;
constexpr int kMaxBlockSharedBytes = 227 * 1024;  // an sm_90 block's opt-in limit
constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;  // what ptxas allots at launch: 168
constexpr int kProducerRegisters = 24;
constexpr int kConsumerRegisters = 240;
static_assert(kProducerThreads * kProducerRegisters + kConsumerThreads * kConsumerRegisters <=
                  kThreads * kLaunchRegisters,
              "the consumers claim only what the producer released");

// The kernels' global operands (attention.h): q, dout [N, H, D], k, v [N, G, D], lse, delta [H, N];
// for the fused dk/dv kernel also the fixed-point factors [H, N] and sums of Note [Deterministic dq
// in fixed point] (null otherwise).
struct BackwardOperands {
  const Bf16* q;
  const Bf16* k;
  const Bf16* v;
  const int32_t* cu;
  AttentionShape shape;
  const float* lse;
  const Bf16* dout;
  const float* delta;
  const float* dq_factor;
  int32_t* dq_sums;
};

// Named barriers of the fused dk/dv kernel (Note [wgmma fused dq]): warpgroup wg's dS^T of steps of
// parity p is in shared memory (1 + 2 wg + p), and warpgroup wg's dq staging is written (5 + wg).
__device__ __forceinline__ int ds_written_barrier(int wg, int step) {
  return 1 + 2 * wg + (step & 1);
}
__device__ __forceinline__ int dq_staged_barrier(int wg) { return 5 + wg; }
constexpr int kDqStagingBuffers = 3;

// The dk/dv block's shared memory: K, V, then the stages' Q tiles and dO tiles, for the fused kernel
// two dS^T tiles and each consumer warpgroup's kDqStagingBuffers half tiles of dq sums (tiles first,
// multiples of the 1024-byte swizzle atom), then the stages' lse, delta (and dq factor) rows, then the
// full and empty barriers.
template <int D, bool kFusedDq>
struct DkdvSmem {
  static constexpr int kKeys = kRows * D * 2;    // bytes of the K or the V tile
  static constexpr int kQTile = kDkdvQ * D * 2;  // bytes of one Q or dO tile
  static constexpr int kStats = kDkdvQ * 4;      // bytes of one lse, delta or factor row
  static constexpr int kStatRows = kFusedDq ? 3 : 2;
  static constexpr int kDsT = kFusedDq ? kRows * kDkdvQ * 2 : 0;  // one dS^T, 128 keys x 64 queries
  static constexpr int kDqStage = kDqSumHalfInts * 4;
  static constexpr int kDqStaging = kFusedDq ? 2 * kDqStagingBuffers * kDqStage : 0;
  static constexpr int kTileBytes = 2 * kKeys + 2 * kStages * kQTile + 2 * kDsT + kDqStaging;
  static constexpr int kBarriers = 2 * kStages * 8;
  static constexpr int kBytes =
      kTileBytes + kStages * kStatRows * kStats + kBarriers + kSwizzleAtomBytes;
  static_assert(kBytes <= kMaxBlockSharedBytes, "the dk/dv block's shared memory");
  static_assert(kDsT % kSwizzleAtomBytes == 0, "dS^T tiles on the swizzle atom");

  unsigned char* tiles;
  uint64_t* full;   // kStages
  uint64_t* empty;  // kStages

  __device__ explicit DkdvSmem(unsigned char* smem_raw)
      : tiles(align_to_swizzle_atom(smem_raw)),
        full(reinterpret_cast<uint64_t*>(tiles + kTileBytes + kStages * kStatRows * kStats)),
        empty(full + kStages) {}
  __device__ unsigned char* k() const { return tiles; }
  __device__ unsigned char* v() const { return tiles + kKeys; }
  __device__ unsigned char* q(int step) const { return tiles + 2 * kKeys + step % kStages * kQTile; }
  __device__ unsigned char* dout(int step) const { return q(step) + kStages * kQTile; }
  __device__ unsigned char* ds(int step) const {
    return tiles + 2 * kKeys + 2 * kStages * kQTile + step % 2 * kDsT;
  }
  __device__ unsigned char* dq_staging(int wg, int step) const {
    return tiles + 2 * kKeys + 2 * kStages * kQTile + 2 * kDsT +
           (wg * kDqStagingBuffers + step % kDqStagingBuffers) * kDqStage;
  }
  __device__ float* lse(int step) const {
    return reinterpret_cast<float*>(tiles + kTileBytes) + step % kStages * kDkdvQ;
  }
  __device__ float* delta(int step) const { return lse(step) + kStages * kDkdvQ; }
  __device__ float* dq_factor(int step) const { return delta(step) + kStages * kDkdvQ; }
};

// The dk/dv block's walk: steps (query head, query tile), heads outermost, tiles ascending from the
// one holding the block's first key k_lo.
struct DkdvWalk {
  int q_first;  // the query tile holding k_lo
  int q_tiles;  // query tiles per head
  int steps;    // over the group's heads
  int first_head;

  __device__ DkdvWalk(const SeqTile& tile, int k_lo, int kv, int group)
      : q_first(k_lo / kDkdvQ),
        q_tiles((tile.len + kDkdvQ - 1) / kDkdvQ - k_lo / kDkdvQ),
        steps(group * q_tiles),
        first_head(kv * group) {}
  __device__ int head(int step) const { return first_head + step / q_tiles; }
  __device__ int q_lo(int step) const { return (q_first + step % q_tiles) * kDkdvQ; }
};

// A consumer's position in the walk, advanced step by step (head and q_lo without a division a step).
struct DkdvStepAt {
  int head, q_lo;
  __device__ void advance(const DkdvWalk& walk) {
    q_lo += kDkdvQ;
    if (q_lo == (walk.q_first + walk.q_tiles) * kDkdvQ) {
      q_lo = walk.q_first * kDkdvQ;
      ++head;
    }
  }
};

// A producer thread's share of the copies of one tile (stage_swizzled over kProducerThreads).
template <int D, int kTileRows>
__device__ __forceinline__ void produce_tile(unsigned char* tile, const Bf16* gmem, int64_t gstride,
                                             int valid, int tid) {
  stage_swizzled<D, kTileRows, kProducerThreads>(tile, gmem, gstride, valid, tid);
}

// The dk/dv producer (thread `tid` of kProducerThreads): K and V with step 0's load, then every step's
// Q, dO, lse and delta (Note [load ring protocol]).
template <int D, bool kFusedDq>
__device__ __forceinline__ void produce_dkdv(const DkdvSmem<D, kFusedDq>& sm,
                                             const BackwardOperands& in, const SeqTile& tile,
                                             int k_lo, int kv, const DkdvWalk& walk, int tid) {
  const AttentionShape& shape = in.shape;
  const int64_t kv_stride = int64_t{shape.g} * D, q_stride = int64_t{shape.h} * D;
  LoadRingProducer<kStages> loads{sm.full, sm.empty};
  for (int step = 0; step < walk.steps; ++step) {
    loads.acquire();
    if (step == 0) {
      const int64_t kv_offset = ((tile.start + k_lo) * shape.g + kv) * D;
      const int k_rows = min(kRows, tile.len - k_lo);
      produce_tile<D, kRows>(sm.k(), in.k + kv_offset, kv_stride, k_rows, tid);
      produce_tile<D, kRows>(sm.v(), in.v + kv_offset, kv_stride, k_rows, tid);
    }
    const int head = walk.head(step), q_lo = walk.q_lo(step);
    const int q_rows = min(kDkdvQ, tile.len - q_lo);
    const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
    produce_tile<D, kDkdvQ>(sm.q(step), in.q + q_offset, q_stride, q_rows, tid);
    produce_tile<D, kDkdvQ>(sm.dout(step), in.dout + q_offset, q_stride, q_rows, tid);
    const int64_t stat = head * shape.n + tile.start + q_lo;
    const int t = tid % kDkdvQ;
    const bool lse_thread = tid < kDkdvQ;
    cp_async_4((lse_thread ? sm.lse(step) : sm.delta(step)) + t,
               (lse_thread ? in.lse : in.delta) + stat + (t < q_rows ? t : 0), t < q_rows);
    if constexpr (kFusedDq) {
      if (lse_thread) {
        cp_async_4(sm.dq_factor(step) + t, in.dq_factor + stat + (t < q_rows ? t : 0), t < q_rows);
      }
    }
    loads.commit();
  }
}

// Consumer warpgroup `wg`'s dk/dv steps (Note [wgmma backward overlap]) and its 64 rows of dk and dv;
// with kFusedDq also its half of each step's dq piece (Note [wgmma fused dq]).
template <int D, bool kFusedDq>
__device__ __forceinline__ void consume_dkdv(const DkdvSmem<D, kFusedDq>& sm,
                                             const BackwardOperands& in, const SeqTile& tile,
                                             int k_lo, int kv, const DkdvWalk& walk, int wg,
                                             Bf16* dk, Bf16* dv) {
  constexpr int kQ = kDkdvQ;
  static_assert(!kFusedDq || D == 2 * kDqSumCols, "the fused dq splits D = 64 between warpgroups");
  const AttentionShape& shape = in.shape;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int wg_k_first = k_lo + 64 * wg;               // the warpgroup's first key
  const int key0 = wg_k_first + 16 * warp + lane / 4;  // this lane's keys: key0 and key0 + 8
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  const uint32_t k_tiles = shared_address(sm.k()), v_tiles = shared_address(sm.v());
  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  uint32_t ds_a[kQ / 16][4];  // dS^T of the step before in bf16: the A operand of its dK
  // Fused: this warpgroup's kDqSumCols columns of the step before's dS K, and its rows' factors.
  float dq_acc[kDqSumCols / 8][4] = {};
  float dq_factor[2];
  // dK += dS^T Q with step `step`'s Q tile; one commit group.
  const auto issue_dk = [&](int step) {
    const uint32_t q_tile = shared_address(sm.q(step));
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(dk_acc, ds_a[ks], mn_major_descriptor(q_tile, kQ, 16 * ks), true);
    }
    wgmma_commit();
  };
  // Fused: dq piece = dS K over both warpgroups' 128 keys, this warpgroup's columns; one commit group.
  // A is step `step`'s dS^T from shared memory (its rows keys: MN-major), B the K tile (MN-major).
  const auto issue_dq = [&](int step, uint32_t k_tile) {
    const uint32_t ds_tile = shared_address(sm.ds(step));
#pragma unroll
    for (int ks = 0; ks < kRows / 16; ++ks) {
      wgmma_ss_mn_n32(dq_acc, mn_major_descriptor(ds_tile, kRows, 16 * ks),
                      mn_major_descriptor(k_tile, kRows, 16 * ks, kDqSumCols * wg), ks > 0);
    }
    wgmma_commit();
  };
  // Fused: step `step`'s dq piece (landed) in fixed point to this warpgroup's staging buffer, then
  // one thread adds it to the sums (Note [Deterministic dq in fixed point]).
  DkdvStepAt at{walk.first_head, walk.q_first * kQ}, before = at;  // this step's, the step before's
  const auto reduce_dq = [&](int step, const DkdvStepAt& pos) {
    const int tid = threadIdx.x % 128;
    unsigned char* staging = sm.dq_staging(wg, step);
#pragma unroll
    for (int j = 0; j < kDqSumCols / 8; ++j) {
      const int4 fixed{__float2int_rn(dq_acc[j][0] * dq_factor[0]),
                       __float2int_rn(dq_acc[j][1] * dq_factor[0]),
                       __float2int_rn(dq_acc[j][2] * dq_factor[1]),
                       __float2int_rn(dq_acc[j][3] * dq_factor[1])};
      *reinterpret_cast<int4*>(staging + (j * 128 + tid) * 16) = fixed;
    }
    fence_proxy_async();
    named_barrier_sync(dq_staged_barrier(wg), 128);
    if (tid == 0) {
      bulk_reduce_add_s32(dq_sum_half_tile(in.dq_sums, shape.h, tile.start, tile.seq, pos.q_lo,
                                           pos.head, wg),
                          shared_address(staging), kDqSumHalfInts * 4);
      bulk_commit();
      bulk_wait_read<1>();  // the reduction before this one has read its buffer
    }
  };
  // Fused: step `step`'s dS^T (in ds_a) to shared memory, its rows' factors to registers; then the
  // other warpgroup may read it.
  const auto publish_ds = [&](int step) {
    unsigned char* ds_tile = sm.ds(step);
    const int row0 = 64 * wg + 16 * warp + lane / 4;
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + 8 * (e & 1), col = 16 * ks + 8 * (e >> 1) + 2 * (lane % 4);
        *reinterpret_cast<uint32_t*>(ds_tile + swizzled_offset(kRows, row, col)) = ds_a[ks][e];
      }
    }
    dq_factor[0] = sm.dq_factor(step)[16 * warp + lane / 4];
    dq_factor[1] = sm.dq_factor(step)[16 * warp + lane / 4 + 8];
    fence_proxy_async();
    named_barrier_arrive(ds_written_barrier(wg, step), 256);
  };
  // Step `step` up to its dS^T, which it leaves in ds_a for the next step to issue the dK of (not the
  // first step: `first` is std::true_type there, so that no wgmma sits under a branch).
  const auto compute_step = [&](int step, auto first) {
    constexpr bool kFirst = decltype(first)::value;
    wait_loaded(sm.full + step % kStages, step / kStages);
    const int q_lo = at.q_lo, q_rows = min(kQ, tile.len - q_lo);
    const uint32_t q_tile = shared_address(sm.q(step)), g_tile = shared_address(sm.dout(step));
    float p[kQ / 8][4], ds[kQ / 8][4];  // S^T, then P^T; dP^T, then dS^T
    // K's and V's addresses hidden from the compiler per step, so that it rebuilds their descriptors
    // here instead of holding all 2 D / 16 of them in registers through the loop (at D = 128 that
    // spilled).
    uint32_t k_tile = k_tiles, v_tile = v_tiles;
    asm volatile("" : "+r"(k_tile), "+r"(v_tile));
    // Fused: the other warpgroup's dS^T of the step before is in shared memory. (Issuing the dq piece
    // after S^T and dP^T instead, to wait here while they run, measured 5% slower.)
    if constexpr (kFusedDq && !kFirst) named_barrier_sync(ds_written_barrier(1 - wg, step - 1), 256);
    wgmma_fence_operands(dk_acc);
    wgmma_fence_operands(ds_a);
    if constexpr (kFusedDq) wgmma_fence_operands(dq_acc);
    wgmma_fence();
    if constexpr (!kFirst) {
      issue_dk(step - 1);
      if constexpr (kFusedDq) issue_dq(step - 1, k_tile);
    }
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
    wgmma_wait<1>();  // the step before's dK (and dq piece) and S^T landed; dP^T may still run
    wgmma_fence_operands(p);
    wgmma_fence_operands(dk_acc);
    wgmma_fence_operands(ds_a);
    if constexpr (!kFirst) mbarrier_arrive(sm.empty + (step - 1) % kStages);
    if constexpr (kFusedDq && !kFirst) {
      wgmma_fence_operands(dq_acc);
      reduce_dq(step - 1, before);
    }

    // Only a step with a query before the warpgroup's last key or past the sequence end needs the mask.
    if (q_lo < wg_k_first + 63 || q_rows < kQ) mask_queries_before_keys(p, key0, q_lo, q_rows);
    probabilities_by_column(p, scale_log2, sm.lse(step));
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
    // dP^T landed; dV runs on through dS^T, except at D = 128, where P^T's bf16 registers beside dS^T's
    // would leave too few for ptxas to keep the wgmmas asynchronous (Note [wgmma backward overlap]).
    wgmma_wait<D == 128 ? 0 : 1>();
    wgmma_fence_operands(ds);
    wgmma_fence_operands(dv_acc);
    wgmma_fence_operands(p_a);
    score_gradients_by_column(p, ds, sm.delta(step));
#pragma unroll
    for (int ks = 0; ks < kQ / 16; ++ks) c_pair_to_a(ds[2 * ks], ds[2 * ks + 1], ds_a[ks]);
    if constexpr (kFusedDq) publish_ds(step);
    wgmma_wait<0>();  // dV landed: nothing of this warpgroup runs across the step's end
    wgmma_fence_operands(dv_acc);
    wgmma_fence_operands(p_a);
    before = at;
    at.advance(walk);
  };
  compute_step(0, std::true_type{});
  for (int step = 1; step < walk.steps; ++step) compute_step(step, std::false_type{});
  const int last = walk.steps - 1;
  if constexpr (kFusedDq) named_barrier_sync(ds_written_barrier(1 - wg, last), 256);
  wgmma_fence_operands(dk_acc);
  wgmma_fence_operands(ds_a);
  if constexpr (kFusedDq) wgmma_fence_operands(dq_acc);
  wgmma_fence();
  issue_dk(last);
  if constexpr (kFusedDq) issue_dq(last, k_tiles);
  wgmma_wait<0>();
  wgmma_fence_operands(dk_acc);
  wgmma_fence_operands(ds_a);
  mbarrier_arrive(sm.empty + last % kStages);
  if constexpr (kFusedDq) {
    wgmma_fence_operands(dq_acc);
    reduce_dq(last, before);
    if (threadIdx.x % 128 == 0) bulk_wait_all();  // the sums are complete when the kernel is
  }

  const float scale = static_cast<float>(shape.scale);
  const float dk_factor[2] = {scale, scale}, dv_factor[2] = {1.f, 1.f};
  const int k_rows = min(kRows, tile.len - k_lo);
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
}

template <int D, bool kFusedDq>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_dkdv_kernel(BackwardOperands in, long long lead, Bf16* __restrict__ dk,
                      Bf16* __restrict__ dv) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const DkdvSmem<D, kFusedDq> sm(smem_raw);
  // The warp index through a shuffle from lane 0: ptxas then sees the role branch as warp-uniform
  // and does not serialise the wgmmas behind it.
  const int warp = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 32), 0);
  if (threadIdx.x == 0) init_load_ring<kStages>(sm.full, sm.empty, kProducerThreads, kConsumerThreads);
  __syncthreads();
  const AttentionShape& shape = in.shape;
  // KV heads in turn, with leads (Note [Attention block order]).
  const OrderedBlock block = lead_ordered_block(blockIdx.x, gridDim.x / shape.g, lead, shape.g);
  const int kv = block.group;
  const SeqTile tile =
      locate_tile_major(in.cu, shape.num_seqs, shape.n, kRows, block.rank, /*reverse=*/false);
  if (!tile.found) return;
  const int k_lo = tile.tile * kRows;
  const DkdvWalk walk(tile, k_lo, kv, shape.h / shape.g);

  if (warp >= kConsumerWarps) {
    release_registers<kProducerRegisters>();
    produce_dkdv<D, kFusedDq>(sm, in, tile, k_lo, kv, walk, threadIdx.x - kConsumerThreads);
    return;
  }
  claim_registers<kConsumerRegisters>();
  consume_dkdv<D, kFusedDq>(sm, in, tile, k_lo, kv, walk, warp / 4, dk, dv);
#endif
}

// The dq kernel's key tiles: S and dP are m64nKv, next to dQ's D / 2 registers per thread; 128 keys
// at D = 64 (64 + 64 + 32 accumulator registers), 64 at D = 128 (32 + 32 + 64).
template <int D>
struct DqTiling {
  static constexpr int kKv = D == 64 ? 128 : 64;
};

// The dq block's shared memory: Q, dO, then the stages' K tiles and V tiles (tiles first, multiples of
// the 1024-byte swizzle atom), then the full and empty barriers.
template <int D>
struct DqSmem {
  static constexpr int kQBytes = kRows * D * 2;               // bytes of the Q or the dO tile
  static constexpr int kTile = DqTiling<D>::kKv * D * 2;      // bytes of one K or V tile
  static constexpr int kBarriers = 2 * kStages * 8;
  static constexpr int kBytes = 2 * kQBytes + 2 * kStages * kTile + kBarriers + kSwizzleAtomBytes;
  static_assert(kBytes <= kMaxBlockSharedBytes, "the dq block's shared memory");

  unsigned char* tiles;
  uint64_t* full;   // kStages
  uint64_t* empty;  // kStages

  __device__ explicit DqSmem(unsigned char* smem_raw)
      : tiles(align_to_swizzle_atom(smem_raw)),
        full(reinterpret_cast<uint64_t*>(tiles + 2 * kQBytes + 2 * kStages * kTile)),
        empty(full + kStages) {}
  __device__ unsigned char* q() const { return tiles; }
  __device__ unsigned char* dout() const { return tiles + kQBytes; }
  __device__ unsigned char* k(int t) const { return tiles + 2 * kQBytes + t % kStages * kTile; }
  __device__ unsigned char* v(int t) const { return k(t) + kStages * kTile; }
};

// The dq producer (thread `tid` of kProducerThreads): Q and dO with key tile 0's load, then every key
// tile's K and V (Note [load ring protocol]). Keys run to the block's last query, kv_end.
template <int D>
__device__ __forceinline__ void produce_dq(const DqSmem<D>& sm, const BackwardOperands& in,
                                           const SeqTile& tile, int head, int q_lo, int kv_end,
                                           int tid) {
  constexpr int kKv = DqTiling<D>::kKv;
  const AttentionShape& shape = in.shape;
  const int kv = head / (shape.h / shape.g);
  const int64_t kv_stride = int64_t{shape.g} * D, q_stride = int64_t{shape.h} * D;
  const Bf16* k_seq = in.k + (tile.start * shape.g + kv) * D;  // key row 0 of the sequence
  const Bf16* v_seq = in.v + (tile.start * shape.g + kv) * D;
  const int num_kv_tiles = (kv_end + kKv - 1) / kKv;
  LoadRingProducer<kStages> loads{sm.full, sm.empty};
  for (int t = 0; t < num_kv_tiles; ++t) {
    loads.acquire();
    if (t == 0) {
      const int64_t q_offset = ((tile.start + q_lo) * shape.h + head) * D;
      const int q_rows = kv_end - q_lo;
      produce_tile<D, kRows>(sm.q(), in.q + q_offset, q_stride, q_rows, tid);
      produce_tile<D, kRows>(sm.dout(), in.dout + q_offset, q_stride, q_rows, tid);
    }
    const int kv_lo = t * kKv, valid = min(kKv, kv_end - kv_lo);
    produce_tile<D, kKv>(sm.k(t), k_seq + kv_lo * kv_stride, kv_stride, valid, tid);
    produce_tile<D, kKv>(sm.v(t), v_seq + kv_lo * kv_stride, kv_stride, valid, tid);
    loads.commit();
  }
}

// Consumer warpgroup `wg`'s dq steps (Note [wgmma backward overlap]) and its 64 rows of dq.
template <int D>
__device__ __forceinline__ void consume_dq(const DqSmem<D>& sm, const BackwardOperands& in,
                                           const SeqTile& tile, int head, int q_lo, int kv_end,
                                           int wg, Bf16* dq) {
  constexpr int kKv = DqTiling<D>::kKv;
  constexpr float kInf = __builtin_huge_valf();
  const AttentionShape& shape = in.shape;
  const int q_rows = kv_end - q_lo;
  const int num_kv_tiles = (kv_end + kKv - 1) / kKv;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int wg_q_first = q_lo + 64 * wg;            // the warpgroup's first query
  const int row0 = 64 * wg + 16 * warp + lane / 4;  // this lane's rows: row0 and row0 + 8
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  // Rows past the sequence end get lse = +inf, hence P = 0, and are never stored.
  float lse_log2[2], row_delta[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + 8 * half;
    const int64_t stat = head * shape.n + tile.start + q_lo + row;
    lse_log2[half] = row < q_rows ? in.lse[stat] * kLog2e : kInf;
    row_delta[half] = row < q_rows ? in.delta[stat] : 0.f;
  }

  const uint32_t q_tile = shared_address(sm.q()), g_tile = shared_address(sm.dout());
  float dq_acc[D / 8][4] = {};
  uint32_t ds_a[kKv / 16][4];  // dS of the tile before in bf16: the A operand of its dQ
  // dQ += dS K with key tile t's K; one commit group.
  const auto issue_dq = [&](int t) {
    const uint32_t k_tile = shared_address(sm.k(t));
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) {
      wgmma_rs<D, WgmmaMajor::kMn>(dq_acc, ds_a[ks], mn_major_descriptor(k_tile, kKv, 16 * ks), true);
    }
    wgmma_commit();
  };
  // Key tile t up to its dS, which it leaves in ds_a for the next tile to issue the dQ of (as in
  // consume_dkdv).
  const auto compute_tile = [&](int t, auto first) {
    constexpr bool kFirst = decltype(first)::value;
    wait_loaded(sm.full + t % kStages, t / kStages);
    const int kv_lo = t * kKv;
    const uint32_t k_tile = shared_address(sm.k(t)), v_tile = shared_address(sm.v(t));
    float p[kKv / 8][4], ds[kKv / 8][4];  // S, then P; dP, then dS
    wgmma_fence_operands(dq_acc);
    wgmma_fence_operands(ds_a);
    wgmma_fence();
    if constexpr (!kFirst) issue_dq(t - 1);
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
    wgmma_wait<1>();  // the tile before's dQ and S landed; dP may still run
    wgmma_fence_operands(p);
    wgmma_fence_operands(dq_acc);
    wgmma_fence_operands(ds_a);
    if constexpr (!kFirst) mbarrier_arrive(sm.empty + (t - 1) % kStages);

    // Only a tile whose last key comes after the warpgroup's first query needs the mask.
    if (kv_lo + kKv - 1 > wg_q_first) mask_causal(p, kv_lo, q_lo + row0);
    probabilities_by_row(p, scale_log2, lse_log2);
    wgmma_wait<0>();
    wgmma_fence_operands(ds);
    score_gradients_by_row(p, ds, row_delta);
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) c_pair_to_a(ds[2 * ks], ds[2 * ks + 1], ds_a[ks]);
  };
  compute_tile(0, std::true_type{});
  for (int t = 1; t < num_kv_tiles; ++t) compute_tile(t, std::false_type{});
  const int last = num_kv_tiles - 1;
  wgmma_fence_operands(dq_acc);
  wgmma_fence_operands(ds_a);
  wgmma_fence();
  issue_dq(last);
  wgmma_wait<0>();
  wgmma_fence_operands(dq_acc);
  wgmma_fence_operands(ds_a);
  mbarrier_arrive(sm.empty + last % kStages);

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
}

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_dq_kernel(BackwardOperands in, long long lead, Bf16* __restrict__ dq) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const DqSmem<D> sm(smem_raw);
  const int warp = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 32), 0);
  if (threadIdx.x == 0) init_load_ring<kStages>(sm.full, sm.empty, kProducerThreads, kConsumerThreads);
  __syncthreads();
  const AttentionShape& shape = in.shape;
  // Heads in turn, with leads, last query tiles first (Note [Attention block order]).
  const OrderedBlock block = lead_ordered_block(blockIdx.x, gridDim.x / shape.h, lead, shape.h);
  const int head = block.group;
  const SeqTile tile =
      locate_tile_major(in.cu, shape.num_seqs, shape.n, kRows, block.rank, /*reverse=*/true);
  if (!tile.found) return;
  const int q_lo = tile.tile * kRows, kv_end = q_lo + min(kRows, tile.len - q_lo);

  if (warp >= kConsumerWarps) {
    release_registers<kProducerRegisters>();
    produce_dq<D>(sm, in, tile, head, q_lo, kv_end, threadIdx.x - kConsumerThreads);
    return;
  }
  claim_registers<kConsumerRegisters>();
  consume_dq<D>(sm, in, tile, head, q_lo, kv_end, warp / 4, dq);
#endif
}

template <int D, bool kFusedDq>
void launch_wgmma_dkdv(const BackwardOperands& in, Bf16* dk, Bf16* dv, cudaStream_t stream) {
  constexpr int kDkdvSmem = DkdvSmem<D, kFusedDq>::kBytes;
  const unsigned blocks = attention_tile_blocks(in.shape, kRows);
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_dkdv_kernel<D, kFusedDq>), kDkdvSmem);
  const long long lead = attention_lead_blocks(blocks);
  wgmma_dkdv_kernel<D, kFusedDq>
      <<<blocks * in.shape.g, kThreads, kDkdvSmem, stream>>>(in, lead, dk, dv);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void launch_wgmma_backward(const BackwardOperands& in, Bf16* dq, Bf16* dk, Bf16* dv,
                           cudaStream_t stream) {
  constexpr int kDqSmem = DqSmem<D>::kBytes;
  const unsigned blocks = attention_tile_blocks(in.shape, kRows);
  launch_wgmma_dkdv<D, false>(in, dk, dv, stream);
  const long long lead = attention_lead_blocks(blocks);
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_dq_kernel<D>), kDqSmem);
  wgmma_dq_kernel<D><<<blocks * in.shape.h, kThreads, kDqSmem, stream>>>(in, lead, dq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void wgmma_attention_backward(const AttentionShape& shape, const void* q, const void* k,
                              const void* v, const int32_t* cu_seqlens, const float* lse,
                              const void* dout, const float* delta, void* dq, void* dk, void* dv,
                              const DqSumsWorkspace* fused_dq, cudaStream_t stream) {
  const BackwardOperands in{static_cast<const Bf16*>(q),
                            static_cast<const Bf16*>(k),
                            static_cast<const Bf16*>(v),
                            cu_seqlens,
                            shape,
                            lse,
                            static_cast<const Bf16*>(dout),
                            delta,
                            fused_dq != nullptr ? fused_dq->factor : nullptr,
                            fused_dq != nullptr ? fused_dq->sums : nullptr};
  auto* dqb = static_cast<Bf16*>(dq);
  auto* dkb = static_cast<Bf16*>(dk);
  auto* dvb = static_cast<Bf16*>(dv);
  if (fused_dq != nullptr) {  // D = 64 (attention_backward.cu chooses it only there)
    launch_wgmma_dkdv<64, true>(in, dkb, dvb, stream);
  } else if (shape.d == 64) {
    launch_wgmma_backward<64>(in, dqb, dkb, dvb, stream);
  } else {
    launch_wgmma_backward<128>(in, dqb, dkb, dvb, stream);
  }
}

}  // namespace dtrn::cuda
