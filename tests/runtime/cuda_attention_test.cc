// The CUDA attention kernels (cuda/attention.h) against the CPU backend, their executable specification.
// Inputs are drawn on the CPU in the tested dtype; the reference runs the CPU kernels in f64 on exactly
// those rounded values. The GPU kernels are called through the backend table (white-box, so lse and
// every gradient are checked and the outputs can be poisoned first) and once through the public ops
// with autograd. Every GPU output is filled with NaN before the kernels run, so an element a kernel
// forgets to write fails the comparison. Every test that needs a GPU skips cleanly without one.
//
// Coverage: packed batches with empty and one-row sequences and lengths that are not multiples of any
// tile size (generic tiles of 16 and 32 rows, tensor-core tiles of 32 and 64), S = 1 and S = 8, MHA
// (H = G) and grouped heads (H = 3G), D in {4, 16, 64, 128} (and 256 and f64 for the generic kernels),
// f32 and bf16 on both bf16 paths, the split and the fused tensor-core backward
// (DTRN_ATTENTION_BACKWARD), bit-reproducibility of the backward, and the Hopper wgmma forward and
// backward (DTRN_ATTENTION_KERNEL=wgmma, DTRN_ATTENTION_BACKWARD=wgmma; those tests skip unless the GPU
// runs their sm_90a code).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../../runtime/src/backend.h"
#include "cuda_attention_fixtures.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn {
namespace {

using namespace attention_fixtures;  // NOLINT(build/namespaces): the suite's shared vocabulary

TEST(CudaAttention, F32MatchesCpuF64) {
  REQUIRE_GPU();
  uint64_t seed = 1;
  for (int64_t d : {4, 16, 64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kF32}, kF32, seed++);
    }
    expect_matches_reference({kSingle, 2, 2, d, DType::kF32}, kF32, seed++);
    expect_matches_reference({random_lengths(7), 6, 2, d, DType::kF32}, kF32, seed++);
  }
}

TEST(CudaAttention, F32AndF64AtTheLargestHeadDim) {
  REQUIRE_GPU();
  expect_matches_reference({{1, 70, 0, 33}, 3, 1, 256, DType::kF32}, kF32, 20);
  expect_matches_reference({{1, 70, 0, 33}, 3, 1, 256, DType::kF64}, kF64, 21);
  expect_matches_reference({kMixed, 6, 2, 16, DType::kF64}, kF64, 22);
}

// D = 64 and 128 take the tensor cores unless told otherwise; D = 4 and 16 always the generic kernels.
TEST(CudaAttention, Bf16TensorCoresMatchCpuF64) {
  REQUIRE_GPU();
  uint64_t seed = 30;
  for (int64_t d : {64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
    }
    expect_matches_reference({kSingle, 3, 1, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({random_lengths(8), 6, 2, d, DType::kBF16}, kBf16, seed++);
  }
}

TEST(CudaAttention, Bf16GenericMatchesCpuF64) {
  REQUIRE_GPU();
  KernelChoice generic("generic");
  uint64_t seed = 50;
  for (int64_t d : {4, 16, 64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
    }
    expect_matches_reference({kSingle, 2, 2, d, DType::kBF16}, kBf16, seed++);
  }
}

// The switch really changes the path: the tensor cores round P to bf16 before P V, the generic kernel
// does not, so some of the ~10^5 bf16 outputs differ in their last bits.
TEST(CudaAttention, KernelSwitchSelectsADifferentPath) {
  REQUIRE_GPU();
  const Inputs in = make_inputs({kMixed, 6, 2, 64, DType::kBF16}, 70);
  const std::vector<double> tensor_cores = run_kernels(in, kGpu, DType::kBF16).out.to_vector();
  std::vector<double> generic;
  {
    KernelChoice choice("generic");
    generic = run_kernels(in, kGpu, DType::kBF16).out.to_vector();
  }
  EXPECT_NE(tensor_cores, generic);
  {
    KernelChoice bad("fastest");
    EXPECT_THAT([&] { run_kernels(in, kGpu, DType::kBF16); },
                ::testing::ThrowsMessage<Error>(::testing::HasSubstr("DTRN_ATTENTION_KERNEL")));
  }
}

// The tensor cores need 16-byte aligned rows; a contiguous view 2 bytes into its storage must take the
// generic kernels and still be right.
TEST(CudaAttention, MisalignedBf16OperandsTakeTheGenericKernels) {
  REQUIRE_GPU();
  const Problem p{kMixed, 6, 2, 64, DType::kBF16};
  SCOPED_TRACE(describe(p));
  const Inputs in = make_inputs(p, 95);
  Inputs x = on_device(in, kGpu, DType::kBF16);
  const Tensor storage = Tensor::empty({x.q.numel() + 1}, DType::kBF16, kGpu);
  const Tensor shifted = storage.narrow(0, 1, x.q.numel()).reshape(x.q.shape());
  ASSERT_TRUE(shifted.is_contiguous());
  shifted.copy_(x.q);
  x.q = shifted;
  const Outputs got = run_kernels(x), want = reference(in);
  expect_outputs_close(got, want, kBf16);
}

// No atomics and fixed summation orders: two runs give the same bits, forward and backward.
TEST(CudaAttention, ResultsAreBitReproducible) {
  REQUIRE_GPU();
  for (const char* kernel : {"auto", "generic"}) {
    KernelChoice choice(kernel);
    for (DType dtype : {DType::kBF16, DType::kF32}) {
      for (int64_t d : {64, 128}) {
        const Inputs in = make_inputs({random_lengths(9), 6, 2, d, dtype}, 80);
        const Outputs a = run_kernels(in, kGpu, dtype), b = run_kernels(in, kGpu, dtype);
        const std::string what = std::string(kernel) + " " + std::string(dtype_name(dtype)) +
                                 " D " + std::to_string(d);
        EXPECT_TRUE(same_bits(a.out, b.out)) << what;
        EXPECT_TRUE(same_bits(a.lse, b.lse)) << what;
        EXPECT_TRUE(same_bits(a.dq, b.dq)) << what;
        EXPECT_TRUE(same_bits(a.dk, b.dk)) << what;
        EXPECT_TRUE(same_bits(a.dv, b.dv)) << what;
      }
    }
  }
}

TEST(CudaAttention, Bf16FusedBackwardMatchesCpuF64) {
  REQUIRE_GPU();
  const BackwardChoice fused("fused");
  uint64_t seed = 100;
  for (int64_t d : {64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
    }
    expect_matches_reference({kSingle, 3, 1, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({random_lengths(10), 6, 2, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({kLong, 6, 2, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({kLong, 2, 2, d, DType::kBF16}, kBf16, seed++);
  }
  // Where the tensor cores do not apply (D = 16, f32) the choice leaves the generic kernels in charge.
  expect_matches_reference({kMixed, 6, 2, 16, DType::kBF16}, kBf16, seed++);
  expect_matches_reference({kMixed, 6, 2, 64, DType::kF32}, kF32, seed++);
}

// Many more blocks than fit on the GPU at once (so blocks wait for key tiles that are not resident
// yet), long sequences (64 key tiles, query tiles collecting up to 64 pieces) and the 360m preset's
// heads: the fused backward finishes (its waits are deadlock-free) and gives the same bits twice.

TEST(CudaAttention, FusedBackwardIsBitReproducible) {
  REQUIRE_GPU();
  for (int64_t d : {64, 128}) {
    for (const std::vector<int64_t>& lens : {random_lengths(9), kLong}) {
      const Inputs in = make_inputs({lens, 6, 2, d, DType::kBF16}, 110);
      expect_same_gradients(run_backward("fused", in), run_backward("fused", in),
                            "D " + std::to_string(d));
    }
  }
  for (const LargeCase& c : kLargeCases) {
    const Inputs in = large_inputs(c, 111);
    expect_same_gradients(run_backward("fused", in), run_backward("fused", in),
                          "large D " + std::to_string(c.d));
  }
}

// The split and the fused backward compute the same products of the same bf16-rounded P and dS in f32
// and differ in the order of the f32 additions (dq: one accumulator over all keys against 128-key
// pieces summed in global memory; dk, dv: heads outermost and query tiles ascending against heads
// innermost and query tiles descending). That is ~1e-6 relative and moves a bf16 output by at most one
// unit in its last place, at most 2^-7 of the element: below 1e-2 of the tensor's scale elementwise.
// Few elements sit that close to a rounding boundary, so in norm the difference is far below one unit;
// 2e-3 leaves margin while a wrong piece or a piece added twice would not fit. A different path really
// runs: on the large case some dq bits differ.
TEST(CudaAttention, FusedBackwardAgreesWithSplit) {
  REQUIRE_GPU();
  constexpr Tolerance kPaths{1e-2, 2e-3};
  uint64_t seed = 120;
  for (int64_t d : {64, 128}) {
    for (const Problem& p :
         {Problem{kMixed, 6, 2, d, DType::kBF16}, Problem{kLong, 3, 1, d, DType::kBF16}}) {
      SCOPED_TRACE(describe(p));
      const Inputs in = make_inputs(p, seed++);
      expect_outputs_close(run_backward("fused", in), run_backward("split", in), kPaths);
    }
  }
  const Inputs in = large_inputs(kLargeCases[0], 121);
  const Outputs split = run_backward("split", in), fused = run_backward("fused", in);
  expect_close(fused.dq, split.dq, kPaths, "large dq");
  expect_close(fused.dk, split.dk, kPaths, "large dk");
  expect_close(fused.dv, split.dv, kPaths, "large dv");
  EXPECT_FALSE(same_bits(fused.dq, split.dq));
}

TEST(CudaAttention, BackwardSwitchRejectsUnknownValues) {
  REQUIRE_GPU();
  const Inputs in = make_inputs({kMixed, 6, 2, 64, DType::kBF16}, 130);
  EXPECT_THAT([&] { run_backward("fastest", in); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("DTRN_ATTENTION_BACKWARD")));
}

// Through the public ops and autograd, with the offsets on the GPU: the same values as the CPU ops.
TEST(CudaAttention, OpsAndAutogradOnTheGpu) {
  REQUIRE_GPU();
  const Problem p{{3, 0, 70, 1}, 4, 2, 16, DType::kF32};
  const Inputs in = make_inputs(p, 90);
  std::vector<std::vector<Tensor>> results;
  for (Device device : {Device::cpu(), kGpu}) {
    // Fresh leaves on each device (a clone has no history).
    Tensor q = in.q.clone().to(device), k = in.k.clone().to(device), v = in.v.clone().to(device);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor out = attention(q, k, v, in.cu_seqlens.to(device));
    ASSERT_EQ(out.device(), device);
    out.backward(in.dout.to(device));
    results.push_back({out, q.grad(), k.grad(), v.grad()});
  }
  const char* names[] = {"out", "dq", "dk", "dv"};
  for (size_t i = 0; i < results[0].size(); ++i) {
    expect_close(results[1][i], results[0][i], kF32, names[i]);
  }
  // Dense form: B = 2 sequences of T = 40.
  const Tensor q = Tensor::uniform({2, 40, 4, 64}, -2, 2, 91, 1, 0, DType::kBF16);
  const Tensor k = Tensor::uniform({2, 40, 2, 64}, -2, 2, 91, 2, 0, DType::kBF16);
  const Tensor v = Tensor::uniform({2, 40, 2, 64}, -1, 1, 91, 3, 0, DType::kBF16);
  const Tensor want = causal_attention(q.to(DType::kF64), k.to(DType::kF64), v.to(DType::kF64));
  expect_close(causal_attention(q.to(kGpu), k.to(kGpu), v.to(kGpu)), want, kBf16, "causal_attention");
}

// N = 0: the op skips the kernels; the output is empty and k, v get (empty) zero gradients.
TEST(CudaAttention, EmptyBatchOnTheGpu) {
  REQUIRE_GPU();
  Tensor q = Tensor::empty({0, 2, 64}, DType::kBF16, kGpu).set_requires_grad(true);
  Tensor k = Tensor::empty({0, 1, 64}, DType::kBF16, kGpu).set_requires_grad(true);
  Tensor out = attention(q, k, k, Tensor::from_ints({0, 0}, {2}, DType::kI32, kGpu));
  EXPECT_EQ(out.shape(), (Shape{0, 2, 64}));
  out.backward(Tensor::empty({0, 2, 64}, DType::kBF16, kGpu));
  EXPECT_EQ(q.grad().shape(), q.shape());
  EXPECT_EQ(k.grad().shape(), k.shape());
}

}  // namespace
}  // namespace dtrn

namespace dtrn {
namespace {

// The wgmma forward (out, lse) and the tensor-core backward that reads its lse, against the CPU f64
// reference: the tensor-core cases above, plus key tiles of 128 filled exactly (128), by one row (129)
// and several times over (700, 333), so that the online softmax rescales across tiles and the diagonal
// tile is masked at every offset. Tolerances and their reasons: kBf16.
TEST(CudaAttention, WgmmaForwardMatchesCpuF64) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  uint64_t seed = 140;
  for (int64_t d : {64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
      expect_matches_reference({kLong, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
    }
    expect_matches_reference({kSingle, 3, 1, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({random_lengths(11), 6, 2, d, DType::kBF16}, kBf16, seed++);
  }
}

// The wgmma forward's load ring (Note [wgmma forward load ring]: three stages, each with a full and
// an empty mbarrier whose phase parity the waiters name) through more than two full rounds: 1000
// rows are 8 key tiles for the last query tile, so tiles 6 and 7 reuse stages 0 and 1 in their
// third phase, when the parity a waiter names repeats (a parity off by a phase deadlocks or reads a
// stale tile there); 385 ends one row into its fourth tile (the ring's first refill). Against the
// CPU f64 reference, tolerances as kBf16 says. A hang here means a barrier's arrivals and waits
// disagree.
TEST(CudaAttention, WgmmaForwardCyclesItsLoadRing) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  uint64_t seed = 190;
  for (int64_t d : {64, 128}) {
    expect_matches_reference({{1000, 385}, 3, 1, d, DType::kBF16}, kBf16, seed++);
  }
}

// The wgmma forward's persistent blocks (Note [wgmma forward schedule]) each through several work
// items: 64 sequences of 0 .. 300 rows (with empty, one-row, 128- and 129-row ones among them) are
// about 140 query tiles of the schedule, times 4 heads, several items for each of an H200's 132
// blocks, so the Q slots are reused, an item's first key tile follows the last one of the item
// before in the ring, and the item order of the snake comes into play. Against the CPU f64
// reference (kBf16).
TEST(CudaAttention, WgmmaForwardBlocksTakeManyItems) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  const std::vector<int64_t> lens = random_lengths(31, 64, 300, {{3, 0}, {10, 1}, {20, 128}, {30, 129}});
  uint64_t seed = 200;
  for (int64_t d : {64, 128})
    expect_matches_reference({lens, 4, 2, d, DType::kBF16}, kBf16, seed++);
}

// Two runs give the same bits (no atomics; every sum in a fixed order), on small and on large problems
// (the 360m preset's heads at 2 x 8192: 64 key tiles per query tile, 1920 blocks).
TEST(CudaAttention, WgmmaForwardIsBitReproducible) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  for (int64_t d : {64, 128}) {
    const Inputs in = make_inputs({random_lengths(12), 6, 2, d, DType::kBF16}, 150);
    const Outputs a = run_kernels(in, kGpu, DType::kBF16), b = run_kernels(in, kGpu, DType::kBF16);
    EXPECT_TRUE(same_bits(a.out, b.out)) << "D " << d;
    EXPECT_TRUE(same_bits(a.lse, b.lse)) << "D " << d;
  }
  for (const LargeCase& c : kLargeCases) {
    const Inputs in = large_inputs(c, 151);
    const Outputs a = run_kernels(in, kGpu, DType::kBF16), b = run_kernels(in, kGpu, DType::kBF16);
    EXPECT_TRUE(same_bits(a.out, b.out)) << "large D " << c.d;
    EXPECT_TRUE(same_bits(a.lse, b.lse)) << "large D " << c.d;
  }
}

// At sizes the CPU reference cannot check in a unit test, the wgmma forward against the mma.sync one.
// Both compute the same f32 products of the same bf16 operands and round P to bf16; they differ in
// where the online softmax rescales (key tiles of 128 against 64: P is rounded relative to a different
// running maximum) and in the order of the f32 sums. That moves a bf16 output by at most about one unit
// in its last place (at most 2^-7 of the element, below 1e-2 of the tensor's scale), and few elements
// at all, so 2e-3 in norm; lse (~10) only by the f32 rounding of l, a sum of up to 8192 terms: ~1e-6,
// and 1e-5 of max |lse| bounds it with margin. What this catches is a block, a tile or a head at a
// wrong offset or a mis-masked diagonal tile, which move whole rows by far more (one dropped key of a
// long row may hide below the lse bound: the CPU-reference test above catches that on short rows).
// The paths really differ: some output bits do.
TEST(CudaAttention, WgmmaForwardAgreesWithTensorCoresAtScale) {
  REQUIRE_WGMMA();
  constexpr Tolerance kOut{1e-2, 2e-3}, kLse{1e-5, 1e-5};
  for (const LargeCase& c : kLargeCases) {
    SCOPED_TRACE("large D " + std::to_string(c.d));
    const Inputs in = large_inputs(c, 160);
    Outputs tensor_cores, wgmma;
    {
      const KernelChoice choice("mma");
      tensor_cores = run_kernels(in, kGpu, DType::kBF16);
    }
    {
      const KernelChoice choice("wgmma");
      wgmma = run_kernels(in, kGpu, DType::kBF16);
    }
    expect_close(wgmma.out, tensor_cores.out, kOut, "out");
    expect_close(wgmma.lse, tensor_cores.lse, kLse, "lse");
    EXPECT_FALSE(same_bits(wgmma.out, tensor_cores.out));
  }
}

// Through the public ops and autograd, bf16 on the GPU against f64 on the CPU: out and every gradient.
void expect_autograd_matches_cpu(const Problem& p, uint64_t seed) {
  SCOPED_TRACE(describe(p));
  const Inputs in = make_inputs(p, seed);
  std::vector<std::vector<Tensor>> results;
  const std::pair<Device, DType> sides[] = {{Device::cpu(), DType::kF64}, {kGpu, DType::kBF16}};
  for (const auto& [device, dtype] : sides) {
    Tensor q = in.q.to(dtype).to(device), k = in.k.to(dtype).to(device), v = in.v.to(dtype).to(device);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor out = attention(q, k, v, in.cu_seqlens.to(device));
    out.backward(in.dout.to(dtype).to(device));
    results.push_back({out, q.grad(), k.grad(), v.grad()});
  }
  const char* names[] = {"out", "dq", "dk", "dv"};
  for (size_t i = 0; i < results[0].size(); ++i) {
    expect_close(results[1][i], results[0][i], kBf16, names[i]);
  }
}

// With DTRN_ATTENTION_KERNEL=wgmma: the wgmma forward's out and lse feed the tensor-core backward.
TEST(CudaAttention, WgmmaOpsAndAutogradMatchTheCpu) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  expect_autograd_matches_cpu({kLong, 6, 2, 64, DType::kBF16}, 170);
}

// Where the device or the build cannot run the wgmma kernel, the choice falls back to the mma.sync
// forward: the same bits as the default.
TEST(CudaAttention, WgmmaChoiceFallsBackWhereUnavailable) {
  REQUIRE_GPU();
  if (wgmma_skip_reason().empty()) GTEST_SKIP() << "this GPU runs the wgmma forward";
  const Inputs in = make_inputs({kMixed, 6, 2, 64, DType::kBF16}, 180);
  const Outputs tensor_cores = run_kernels(in, kGpu, DType::kBF16);
  const KernelChoice wgmma("wgmma");
  const BackwardChoice wgmma_backward("wgmma");
  const Outputs fallback = run_kernels(in, kGpu, DType::kBF16);
  EXPECT_TRUE(same_bits(fallback.out, tensor_cores.out));
  EXPECT_TRUE(same_bits(fallback.lse, tensor_cores.lse));
  expect_same_gradients(fallback, tensor_cores, "backward fallback");
}

TEST(CudaAttention, WgmmaBackwardMatchesCpuF64) {
  REQUIRE_WGMMA();
  const BackwardChoice wgmma("wgmma");
  uint64_t seed = 200;
  for (int64_t d : {64, 128}) {
    for (const Heads& heads : kHeadLayouts) {
      expect_matches_reference({kWgmmaEdges, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
      expect_matches_reference({kMixed, heads.h, heads.g, d, DType::kBF16}, kBf16, seed++);
    }
    expect_matches_reference({kSingle, 3, 1, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({kLong, 6, 2, d, DType::kBF16}, kBf16, seed++);
    for (uint32_t draw : {13u, 14u}) {
      expect_matches_reference({random_lengths(draw), 6, 2, d, DType::kBF16}, kBf16, seed++);
    }
    const KernelChoice wgmma_forward("wgmma");
    expect_matches_reference({kWgmmaEdges, 6, 2, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({kWgmmaEdges, 3, 3, d, DType::kBF16}, kBf16, seed++);
  }
}

// Note [Attention block order] over more sequences than a warp has lanes: 70 sequences of 0 .. 300
// rows (empty, one-row, 64-, 128- and 129-row ones among them), so that locate_tile_major_in_warp
// takes several ballot rounds and skips the sequences too short for a rank. The mma.sync forward and
// the wgmma backward (dk/dv grouped by KV head, dq by head) with no lead, the default third and a
// whole group (every case of lead_ordered_block), and the fused mma.sync backward, whose tickets
// follow the same tile-major order. A tile no block took stays NaN (run_kernels poisons the
// outputs); one taken at the wrong place disagrees with the CPU f64 reference (kBf16).
TEST(CudaAttention, BlocksCoverManySequencesInEveryOrder) {
  REQUIRE_WGMMA();
  const std::vector<int64_t> lens =
      random_lengths(47, 70, 300, {{0, 0}, {33, 1}, {40, 64}, {50, 128}, {69, 129}});
  const KernelChoice mma_forward("mma");
  uint64_t seed = 260;
  for (int64_t d : {64, 128}) {
    {
      const BackwardChoice wgmma("wgmma");
      for (const char* lead : {"0", "", "1"}) {
        SCOPED_TRACE(std::string("DTRN_ATTENTION_LEAD=") + lead);
        const ScopedEnv env("DTRN_ATTENTION_LEAD", lead);
        expect_matches_reference({lens, 6, 2, d, DType::kBF16}, kBf16, seed++);
      }
      expect_matches_reference({lens, 3, 3, d, DType::kBF16}, kBf16, seed++);
    }
    const BackwardChoice fused("fused");
    expect_matches_reference({lens, 6, 2, d, DType::kBF16}, kBf16, seed++);
  }
}

TEST(CudaAttention, LeadRejectsValuesOutsideZeroToOne) {
  REQUIRE_GPU();
  const Inputs in = make_inputs({kMixed, 6, 2, 64, DType::kBF16}, 280);
  for (const char* bad : {"1.5", "-0.1", "third"}) {
    const ScopedEnv env("DTRN_ATTENTION_LEAD", bad);
    EXPECT_THAT([&] { run_kernels(in, kGpu, DType::kBF16); },
                ::testing::ThrowsMessage<Error>(::testing::HasSubstr("DTRN_ATTENTION_LEAD")));
  }
}

// The wgmma backward's load ring (Note [load ring protocol]: kStages = 4 stages, a full and an empty
// mbarrier each, waiters naming a phase parity, the producer two loads ahead of its arrivals; Note
// [wgmma backward overlap]: a step frees the stage of the step before) at every count of steps that
// behaves differently, against the CPU f64 reference (kBf16). dk/dv steps per block are (query tiles
// of 64 from the block's first key to the sequence end) x (query heads per KV head): with one head
// per KV head, 64 rows are 1 step (nothing freed before the last), 256 are 4 for the first block
// (every stage filled once, none reused) and 2 for the second, 320 are 5 (the first reuse), 3 and 1;
// with three heads per KV head those counts triple and a head ends inside the ring; 1000 rows are 16
// steps per head, many times around it. dq key tiles for the last block of a sequence: 1 (64 rows), 4
// (512 rows at D = 64, 256 at D = 128), 5 (513 and 320) and 8 or 16 (1000). A hang here means a
// barrier's arrivals and waits disagree; wrong values only in blocks with more steps than stages, a
// stage refilled while a product still read it.
TEST(CudaAttention, WgmmaBackwardCyclesItsLoadRing) {
  REQUIRE_WGMMA();
  const BackwardChoice wgmma("wgmma");
  const std::vector<int64_t> lens = {64, 256, 320, 512, 513, 1000};
  uint64_t seed = 250;
  for (int64_t d : {64, 128}) {
    expect_matches_reference({lens, 2, 2, d, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({lens, 3, 1, d, DType::kBF16}, kBf16, seed++);
  }
}

// Two runs give the same bits (no atomics; every sum in a fixed order), on small problems and on the
// large ones (2 x 8192 with the 360m preset's heads: 128 query steps of 64 per head for the first key
// blocks, 64 key tiles for the last query blocks).
TEST(CudaAttention, WgmmaBackwardIsBitReproducible) {
  REQUIRE_WGMMA();
  for (int64_t d : {64, 128}) {
    for (const std::vector<int64_t>& lens : {random_lengths(15), kWgmmaEdges}) {
      const Inputs in = make_inputs({lens, 6, 2, d, DType::kBF16}, 220);
      expect_same_gradients(run_backward("wgmma", in), run_backward("wgmma", in),
                            "D " + std::to_string(d));
    }
  }
  for (const LargeCase& c : kLargeCases) {
    const Inputs in = large_inputs(c, 221);
    expect_same_gradients(run_backward("wgmma", in), run_backward("wgmma", in),
                          "large D " + std::to_string(c.d));
  }
}

// At sizes the CPU reference cannot check in a unit test, the wgmma backward against the mma.sync split
// one. Both rebuild P and dS in f32 from the same bf16 operands and lse and round them to bf16 before
// the same three products; they differ in the order of the f32 sums (the tensor cores' internal order
// for S and dP, where a rare last-bit difference flips one bf16 rounding of P or dS by one unit, 2^-8
// of that term; and the tiling of dq, dk, dv: key tiles of 128 or 64 against 32 or 64, query steps of
// 64 against 32). As for the fused backward (FusedBackwardAgreesWithSplit) that moves a bf16 gradient
// by at most about one unit in its last place, below 1e-2 of the tensor's scale, and few elements at
// all: 2e-3 in norm. A block, tile or head at a wrong offset, a mis-masked diagonal or a dropped step
// moves whole rows by far more. (On the H200 dq came out equal bit for bit: both chains add the same
// k16 products into f32 in the same order, so bits cannot show which path ran; the speed does,
// bench/RESULTS.md.)
TEST(CudaAttention, WgmmaBackwardAgreesWithSplitAtScale) {
  REQUIRE_WGMMA();
  constexpr Tolerance kPaths{1e-2, 2e-3};
  for (const LargeCase& c : kLargeCases) {
    SCOPED_TRACE("large D " + std::to_string(c.d));
    const Inputs in = large_inputs(c, 230);
    const Outputs split = run_backward("split", in), wgmma = run_backward("wgmma", in);
    expect_close(wgmma.dq, split.dq, kPaths, "dq");
    expect_close(wgmma.dk, split.dk, kPaths, "dk");
    expect_close(wgmma.dv, split.dv, kPaths, "dv");
  }
}

// Through the public ops and autograd with both choices wgmma: the wgmma forward feeds the wgmma
// backward, at both head dims.
TEST(CudaAttention, WgmmaForwardAndBackwardOpsMatchTheCpu) {
  REQUIRE_WGMMA();
  const KernelChoice wgmma("wgmma");
  const BackwardChoice wgmma_backward("wgmma");
  expect_autograd_matches_cpu({kLong, 6, 2, 64, DType::kBF16}, 240);
  expect_autograd_matches_cpu({kWgmmaEdges, 4, 4, 128, DType::kBF16}, 241);
}

}  // namespace
}  // namespace dtrn
