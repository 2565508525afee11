// The bf16 attention forward on Hopper's warpgroup MMA (wgmma.cuh; sm_90a only, wgmma_support.h),
// the same computation as the mma.sync forward (attention_tc_forward.cu) with the same outputs: out
// and the f32 lse that the tensor-core backward reads unchanged.
//
// A work item is a tile of kWgmmaRows = 128 query rows of one head, whose causal key tiles of
// kWgmmaKv = 128 keys are walked in order; a persistent block computes a list of items (Note [wgmma
// forward schedule]). Its warpgroups specialise (FlashAttention-3): a producer warpgroup copies Q
// and the K/V tiles into Q slots and a ring of shared stages (attention_wgmma_loads.cuh, Note
// [wgmma forward load ring]); two consumer warpgroups of 64 query rows compute, never issuing a
// load or waiting for each other at a block-wide barrier. Per key tile t a consumer warpgroup runs
//   S(t) = Q K(t)^T: D / 16 SS wgmmas m64n128k16, Q and K both K-major, into 64 f32 accumulators;
//   the online softmax of S(t) (attention_softmax.cuh: their layout per warp is mma.sync's), the
//   causal
//     mask only on the tile that reaches past the warpgroup's first query (the last one);
//   O += P(t) V(t): P rounded to bf16 in registers is the A operand (Note [wgmma m64nNk16
//   fragments]),
//     V the B operand MN-major (transpose flag): kWgmmaKv / 16 RS wgmmas m64nDk16.
// and at the end of the item writes out = o / l and lse while the producer already loads the next.
//
// Note [wgmma forward overlap]
// At D = 64 a key tile costs a warpgroup as long on the special-function unit (one exp2 per score)
// as on the tensor cores, so the kernel is fast only where the softmax runs while MMAs do. Two
// overlaps:
//   * within a warpgroup, S(t + 1) and P(t) V(t) are issued together (two commit groups, S first);
//     wgmma_wait<1> returns when S(t + 1) is done and the softmax of S(t + 1) runs while P(t) V(t)
//     still does; only the rescale of O by the new maximum waits for it (wgmma_wait<0>). The
//     registers of S(t + 1), P(t) and O are all live across the softmax: 64 + 32 + D / 2 per
//     thread.
//   * between warpgroups, named barriers hand the tensor cores back and forth: warpgroup w issues
//   its
//     MMAs only after the other warpgroup has issued its previous ones, so the MMAs of one
//     warpgroup are queued while the other computes its softmax instead of both contending at once.
//     Warpgroup 1 lets warpgroup 0 go first and each hands over after every issue (an item has
//     num_tiles + 1: S(0), then S(t + 1) with P(t) V(t), then the last P V); at the end warpgroup 0
//     takes one more turn, which warpgroup 1's last hand-over completes, so every barrier's
//     arrivals are matched when the block exits.
// Determinism is unchanged: every sum runs in a fixed order, whatever the timing or the block.
//
// Registers: ptxas gives every warpgroup of the 384-thread block the same count at launch, at most
// 65536 / 384 -> 168, and the consumers' live accumulators alone are 128 (D = 64) or 160 (D = 128)
// of them, so at 168 the D = 128 kernel spilled heavily and ptxas serialised its wgmmas. The
// producer needs few (addresses, loop counters, the schedule), so it releases all but
// kProducerRegisters and the consumers claim kConsumerRegisters (setmaxnreg,
// warp_specialization.cuh). ptxas -v reports no spills with 56 / 224; the producer spilled at 40
// and 48.
#include <algorithm>

#include "cuda/attention_softmax.cuh"
#include "cuda/attention_wgmma_loads.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

constexpr int kRows = kWgmmaRows;
constexpr int kKv = kWgmmaKv;
constexpr int kConsumerWarps = kWgmmaConsumerThreads / 32;
constexpr int kThreads = kWgmmaConsumerThreads + kWgmmaProducerThreads;
constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;  // what ptxas allots at launch: 168
constexpr int kProducerRegisters = 56;
constexpr int kConsumerRegisters = 224;
static_assert(kWgmmaProducerThreads * kProducerRegisters +
                      kWgmmaConsumerThreads * kConsumerRegisters <=
                  kThreads * kLaunchRegisters,
              "the consumers claim only what the producer released");
static_assert(kRows == 64 * (kWgmmaConsumerThreads / 128),
              "a consumer warpgroup computes 64 query rows");
// Key tiles as long as query tiles: the last (diagonal) key tile starts at the item's first query,
// so every key tile has a key at or before every query of both warpgroups and none is skipped (no
// branch around the wgmmas, which ptxas would serialise), and the running maximum is finite from
// tile 0 on.
static_assert(kKv == kRows, "no key tile lies wholly after a warpgroup's queries");

// The named barriers of Note [wgmma forward overlap]: warpgroup w waits on kTurnBarrier + w.
constexpr int kTurnBarrier = 1;

// S = Q K^T for the warpgroup's 64 rows of the Q tile and the K tile at k_tile; one commit group.
template <int D>
__device__ __forceinline__ void issue_scores(float (&s)[kKv / 8][4], uint32_t q_tile, int wg,
                                             uint32_t k_tile) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    wgmma_ss<kKv, WgmmaMajor::kK>(s, k_major_descriptor(q_tile, kRows, 64 * wg, 16 * kk),
                                  k_major_descriptor(k_tile, kKv, 0, 16 * kk), kk > 0);
  }
  wgmma_commit();
}

// o += P V for the V tile at v_tile; one commit group.
template <int D>
__device__ __forceinline__ void issue_pv(float (&o)[D / 8][4], const uint32_t (&p)[kKv / 16][4],
                                         uint32_t v_tile) {
#pragma unroll
  for (int ks = 0; ks < kKv / 16; ++ks) {
    wgmma_rs<D, WgmmaMajor::kMn>(o, p[ks], mn_major_descriptor(v_tile, kKv, 16 * ks), true);
  }
  wgmma_commit();
}

// Everything a consumer thread's registers carry from tile to tile.
template <int D>
struct ConsumerState {
  float s[kKv / 8][4];      // scores of the newest tile, then its probabilities in f32
  uint32_t p[kKv / 16][4];  // the previous tile's probabilities in bf16: the A operand of P V
  float o[D / 8][4] = {};
  float m[2] = {-__builtin_huge_valf(), -__builtin_huge_valf()};
  float l[2] = {0.f, 0.f};

  // Registers every following wgmma reads or writes: pinned for the compiler, then the fence.
  __device__ __forceinline__ void fence_for_issue() {
    wgmma_fence_operands(s);
    wgmma_fence_operands(p);
    wgmma_fence_operands(o);
    wgmma_fence();
  }
};

// Work item i's key tiles for consumer warpgroup `wg` (Note [wgmma forward overlap]), from tile g0
// of the ring on; leaves its rows' o, m and l in `st`. query0 is the position of the lane's first
// row in the sequence. The item's Q slot is released as soon as its last S is done.
template <int D>
__device__ __forceinline__ void consume_item(const WgmmaForwardRing<D>& ring, int i, int g0,
                                             int num_tiles, int wg, int wg_q_first, int query0,
                                             float scale_log2, ConsumerState<D>& st) {
  const uint32_t q_tile = shared_address(ring.q(i));
  const auto turn = [&] { named_barrier_sync(kTurnBarrier + wg, kWgmmaConsumerThreads); };
  const auto hand_over = [&] {
    named_barrier_arrive(kTurnBarrier + 1 - wg, kWgmmaConsumerThreads);
  };
  // Turns S(t) into probabilities, returning the rescale for what O holds before tile t.
  const auto softmax = [&](int t, float(&correction)[2]) {
    const int kv_lo = t * kKv;
    if (kv_lo + kKv - 1 > wg_q_first) mask_causal(st.s, kv_lo, query0);
    online_softmax_tile(st.s, st.m, st.l, scale_log2, correction);
  };
  const auto scores_done = [&](int t) {
    if (t == num_tiles - 1) mbarrier_arrive(ring.q_empty_of(i));
  };
  const auto round_p = [&] {
#pragma unroll
    for (int ks = 0; ks < kKv / 16; ++ks) c_pair_to_a(st.s[2 * ks], st.s[2 * ks + 1], st.p[ks]);
  };

  wait_loaded(ring.full_of(g0), ring.phase_of(g0));
  st.fence_for_issue();
  turn();
  issue_scores<D>(st.s, q_tile, wg, shared_address(ring.k(g0)));
  hand_over();
  wgmma_wait<0>();
  wgmma_fence_operands(st.s);
  scores_done(0);
  float correction[2];
  softmax(0, correction);  // o is still 0: nothing to rescale
  round_p();

  for (int t = 1; t < num_tiles; ++t) {
    const int g = g0 + t;
    wait_loaded(ring.full_of(g), ring.phase_of(g));
    st.fence_for_issue();
    turn();
    issue_scores<D>(st.s, q_tile, wg, shared_address(ring.k(g)));
    issue_pv<D>(st.o, st.p, shared_address(ring.v(g - 1)));
    hand_over();
    wgmma_wait<1>();  // S(t) done; P(t - 1) V(t - 1) may still run
    wgmma_fence_operands(st.s);
    scores_done(t);
    softmax(t, correction);
    wgmma_wait<0>();
    wgmma_fence_operands(st.o);
    wgmma_fence_operands(st.p);
    mbarrier_arrive(ring.empty_of(g - 1));
    rescale_rows(st.o, correction);
    round_p();
  }

  const int g_last = g0 + num_tiles - 1;
  st.fence_for_issue();
  turn();
  issue_pv<D>(st.o, st.p, shared_address(ring.v(g_last)));
  hand_over();
  wgmma_wait<0>();
  wgmma_fence_operands(st.o);
  mbarrier_arrive(ring.empty_of(g_last));
}

// Consumer warpgroup `wg`'s loop over the items the producer hands over (Note [wgmma forward load
// ring]): each item's tiles, then its rows of out and lse.
template <int D>
__device__ __forceinline__ void consume_work(const WgmmaForwardRing<D>& ring,
                                             const AttentionShape& shape, int wg, Bf16* out,
                                             float* lse) {
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int row0 = 64 * wg + 16 * warp + lane / 4;  // this lane's first row within the query tile
  const float scale_log2 = static_cast<float>(shape.scale) * kLog2e;
  if (wg == 1) named_barrier_arrive(kTurnBarrier, kWgmmaConsumerThreads);  // warpgroup 0 goes first
  int g0 = 0;  // the ring's key tile of the item's first
  for (int i = 0;; ++i) {
    mbarrier_wait(ring.item_full_of(i), ring.item_phase_of(i));
    const WgmmaWorkItem item = *ring.item(i);
    if (item.head < 0) break;
    const int q_lo = item.tile * kRows, q_rows = min(kRows, item.len - q_lo);
    const int num_tiles = (q_lo + q_rows + kKv - 1) / kKv;
    ConsumerState<D> st;
    consume_item<D>(ring, i, g0, num_tiles, wg, q_lo + 64 * wg, q_lo + row0, scale_log2, st);
    finish_rows<D>(st.o, st.m, st.l, row0, q_rows, item.start + q_lo, item.head, shape, out, lse);
    g0 += num_tiles;
  }
  if (wg == 0)
    named_barrier_sync(kTurnBarrier, kWgmmaConsumerThreads);  // warpgroup 1's last hand-over
}

template <int D>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_forward_kernel(WgmmaForwardOperands in, Bf16* __restrict__ out, float* __restrict__ lse) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  const WgmmaForwardRing<D> ring(smem_raw);
  // The warp index through a shuffle from lane 0: ptxas then sees the role branch as warp-uniform
  // and does not serialise the wgmmas behind it.
  const int warp = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 32), 0);
  if (threadIdx.x == 0) ring.init_barriers();
  __syncthreads();

  if (warp >= kConsumerWarps) {
    release_registers<kProducerRegisters>();
    produce_work<D>(ring, in, threadIdx.x - kWgmmaConsumerThreads);
    return;
  }
  claim_registers<kConsumerRegisters>();
  consume_work<D>(ring, in.shape, warp / 4, out, lse);
#endif
}

template <int D>
void launch_wgmma_forward(const AttentionShape& shape, const Bf16* q, const Bf16* k, const Bf16* v,
                          const int32_t* cu, Bf16* out, float* lse, cudaStream_t stream) {
  constexpr int kSmem = WgmmaForwardSmem<D>::kBytes;
  allow_shared_memory(reinterpret_cast<const void*>(&wgmma_forward_kernel<D>), kSmem);
  const WgmmaForwardOperands in{q, k, v, cu, shape, attention_tile_blocks(shape, kRows)};
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  // One block per SM (Note [wgmma forward schedule]), fewer when there are fewer items.
  const long long items = static_cast<long long>(in.tile_blocks) * shape.h;
  const unsigned blocks = static_cast<unsigned>(std::min<long long>(items, sms));
  wgmma_forward_kernel<D><<<blocks, kThreads, kSmem, stream>>>(in, out, lse);
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
