// The fused wgmma attention backward (DTRN_ATTENTION_BACKWARD=wgmma-fused, the default at D = 64 on
// Hopper): dk and dv as the split wgmma kernels compute them, dq added up in fixed point (Note
// [Deterministic dq in fixed point], runtime/src/cuda/attention_dq_sums.cuh). Against the CPU f64
// reference, against the split backward bit for bit where the two compute the same sums, and
// white-box against the Note's layout and bounds. Every test skips unless the GPU runs the sm_90a
// kernels.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cuda_attention_fixtures.h"

#ifdef DTRN_WITH_CUDA
#include "cuda/attention.h"
#include "cuda/attention_dq_sums.cuh"
#include "cuda/cuda_context.h"
#endif

namespace dtrn {
namespace {

using namespace attention_fixtures;  // NOLINT(build/namespaces): the suite's shared vocabulary

// Every layout the wgmma tests cover, at D = 64: edges around the 64-row step and the 128-key
// block, empty and one-row sequences, grouped and plain heads, the load ring's step counts, 70
// sequences (several ballot rounds in the block search, sums tiles of many sequences side by side),
// with the mma.sync and the wgmma forwards feeding it. D = 128 takes the mma.sync split kernels
// under the same choice (attention.h), checked too.
TEST(CudaAttentionFused, MatchesCpuF64) {
  REQUIRE_WGMMA();
  const BackwardChoice fused("wgmma-fused");
  uint64_t seed = 300;
  for (const Heads& heads : kHeadLayouts) {
    expect_matches_reference({kWgmmaEdges, heads.h, heads.g, 64, DType::kBF16}, kBf16, seed++);
    expect_matches_reference({kMixed, heads.h, heads.g, 64, DType::kBF16}, kBf16, seed++);
  }
  expect_matches_reference({kSingle, 3, 1, 64, DType::kBF16}, kBf16, seed++);
  expect_matches_reference({kLong, 6, 2, 64, DType::kBF16}, kBf16, seed++);
  expect_matches_reference({{64, 256, 320, 512, 513, 1000}, 3, 1, 64, DType::kBF16}, kBf16, seed++);
  expect_matches_reference(
      {random_lengths(47, 70, 300, {{0, 0}, {33, 1}, {40, 64}, {50, 128}, {69, 129}}), 6, 2, 64,
       DType::kBF16},
      kBf16, seed++);
  {
    const KernelChoice wgmma_forward("wgmma");
    expect_matches_reference({kWgmmaEdges, 6, 2, 64, DType::kBF16}, kBf16, seed++);
  }
  expect_matches_reference({kWgmmaEdges, 6, 2, 128, DType::kBF16}, kBf16, seed++);
}

// Integer sums commute: two runs give the same bits whatever order the blocks' pieces arrive in,
// here with the 360m preset's heads at 2 x 8192 (up to 64 pieces a query tile from 640 blocks).
TEST(CudaAttentionFused, IsBitReproducible) {
  REQUIRE_WGMMA();
  const Inputs small = make_inputs({random_lengths(15), 6, 2, 64, DType::kBF16}, 310);
  expect_same_gradients(run_backward("wgmma-fused", small), run_backward("wgmma-fused", small),
                        "small");
  const Inputs large = large_inputs(kLargeCases[0], 311);
  expect_same_gradients(run_backward("wgmma-fused", large), run_backward("wgmma-fused", large),
                        "2 x 8192");
}

// dk and dv come from the same products in the same order as in the split wgmma dk/dv kernel: the
// same bits. dq differs only by the order of its sums and their fixed-point rounding, below a unit
// of bf16 in most elements (the split test's tolerance, WgmmaBackwardAgreesWithSplitAtScale).
TEST(CudaAttentionFused, AgreesWithTheSplitKernels) {
  REQUIRE_WGMMA();
  constexpr Tolerance kPaths{1e-2, 2e-3};
  const Inputs in = large_inputs(kLargeCases[0], 312);
  const Outputs split = run_backward("wgmma", in), fused = run_backward("wgmma-fused", in);
  EXPECT_TRUE(same_bits(fused.dk, split.dk));
  EXPECT_TRUE(same_bits(fused.dv, split.dv));
  expect_close(fused.dq, split.dq, kPaths, "dq");
}

// The fixed-point scale follows each row (Note: f_i from |dO_i|), so rows of dout at scales from 1e-8
// to 1e4, and rows of zeros, each keep their precision. dq_i is linear in dO_i and reads no other row
// of dout, so each (row, head) is checked on its own against the split wgmma backward, which rounds P
// and dS to bf16 exactly as the fused one does: they may differ by a unit of bf16 in an element (1e-2
// of the row's largest) and by the fixed-point units (B_i 2^-29 each, B_i about 12 |dO_i|_2 here, at
// most 64 of them: below 2^-20 |dO_i|_2), nothing else. A scale shared by all rows would miss the
// small rows by many times their size. Zero rows give exact zeros; the whole dq matches the CPU f64
// reference as in MatchesCpuF64.
TEST(CudaAttentionFused, DqKeepsRowsOfEveryScale) {
  REQUIRE_WGMMA();
  const Problem p{{700, 1, 333, 129}, 6, 2, 64, DType::kBF16};
  Inputs in = make_inputs(p, 320);
  const int64_t n = in.dout.size(0), h = p.h, d = p.d;
  std::vector<double> g = in.dout.to_vector();
  const auto zero_row = [](int64_t row) { return row % 17 == 5; };
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t head = 0; head < h; ++head) {
      const double scale =
          zero_row(row) ? 0.0 : std::pow(10.0, -8 + static_cast<int>((row * 7 + head * 3) % 13));
      for (int64_t c = 0; c < d; ++c) g[(row * h + head) * d + c] *= scale;
    }
  }
  in.dout = Tensor::from_vector(g, in.dout.shape(), DType::kBF16);
  g = in.dout.to_vector();  // as rounded to bf16
  const Outputs fused = run_backward("wgmma-fused", in);
  const std::vector<double> got = fused.dq.to_vector();
  const std::vector<double> split = run_backward("wgmma", in).dq.to_vector();
  for (int64_t item = 0; item < n * h; ++item) {
    double row_norm = 0, row_max = 0, max_diff = 0;
    for (int64_t c = 0; c < d; ++c) {
      row_norm += g[item * d + c] * g[item * d + c];
      row_max = std::max(row_max, std::fabs(split[item * d + c]));
      const double diff = std::fabs(got[item * d + c] - split[item * d + c]);
      if (!(diff <= max_diff)) max_diff = diff;  // NaN-sticky
    }
    const int64_t row = item / h;
    if (zero_row(row)) {
      EXPECT_EQ(max_diff, 0.0) << "zero row " << row << " head " << item % h;
      EXPECT_EQ(row_max, 0.0) << "zero row " << row << " head " << item % h;
      continue;
    }
    EXPECT_LE(max_diff, 1e-2 * row_max + std::ldexp(std::sqrt(row_norm), -20))
        << "row " << row << " head " << item % h << ": |dO| " << std::sqrt(row_norm)
        << ", max |dq| " << row_max;
  }
  expect_close(fused.dq, reference(in).dq, kBf16, "dq");
}

// A row of dout with a NaN or an infinity gets a NaN dq (its bound is not finite), never a silent
// zero; dq of every other row stays finite (it does not read that row of dout).
TEST(CudaAttentionFused, NonFiniteDoutGivesNonFiniteDq) {
  REQUIRE_WGMMA();
  const Problem p{{300, 200}, 6, 2, 64, DType::kBF16};
  Inputs in = make_inputs(p, 330);
  const int64_t n = in.dout.size(0), h = p.h, d = p.d;
  std::vector<double> g = in.dout.to_vector();
  const int64_t nan_item = 250 * h + 4, inf_item = 400 * h + 1;
  g[nan_item * d + 7] = std::numeric_limits<double>::quiet_NaN();
  g[inf_item * d] = std::numeric_limits<double>::infinity();
  in.dout = Tensor::from_vector(g, in.dout.shape(), DType::kBF16);
  const std::vector<double> dq = run_backward("wgmma-fused", in).dq.to_vector();
  for (int64_t item = 0; item < n * h; ++item) {
    const bool poisoned = item == nan_item || item == inf_item;
    for (int64_t c = 0; c < d; ++c) {
      if (poisoned) {
        ASSERT_TRUE(std::isnan(dq[item * d + c])) << "row " << item / h << " head " << item % h;
      } else {
        ASSERT_TRUE(std::isfinite(dq[item * d + c])) << "row " << item / h << " head " << item % h;
      }
    }
  }
}

#ifdef DTRN_WITH_CUDA
// White-box, through the launcher with a workspace the test reads back: every dq element is
// scale * sum / f of its sum at the place the Note's layout gives (computed here independently, in
// f32 and rounded to bf16 as the kernel does: the same bits), every factor is a power of two, and
// every sum stays inside the Note's bound of 2^30.
TEST(CudaAttentionFused, DqIsTheSumsOverTheirFactors) {
  REQUIRE_WGMMA();
  const std::vector<int64_t> lens = {130, 0, 1, 700, 64, 65};
  const Problem p{lens, 6, 2, 64, DType::kBF16};
  const Inputs x = on_device(make_inputs(p, 340), kGpu, DType::kBF16);
  const int64_t n = x.q.size(0);
  const double scale = 1.0 / 8.0;
  Tensor out = Tensor::empty(x.q.shape(), DType::kBF16, kGpu);
  Tensor lse = Tensor::empty({p.h, n}, DType::kF32, kGpu);
  backend_for(kGpu).attention(x.q, x.k, x.v, x.cu_seqlens, scale, out, lse);

  cuda::AttentionShape shape;
  shape.n = n;
  shape.h = static_cast<int>(p.h);
  shape.g = static_cast<int>(p.g);
  shape.d = static_cast<int>(p.d);
  shape.num_seqs = static_cast<int>(lens.size());
  shape.scale = scale;
  const size_t bytes = cuda::attention_backward_workspace_bytes(
      cuda::ElemType::kBF16, shape, cuda::AttentionKernel::kAuto,
      cuda::AttentionBackward::kWgmmaFused);
  ASSERT_EQ(bytes, cuda::dq_sums_workspace_bytes(shape));
  Tensor workspace = Tensor::zeros({static_cast<int64_t>(bytes / 4)}, DType::kI32, kGpu);
  Tensor delta = Tensor::empty({p.h, n}, DType::kF32, kGpu);
  Tensor dq = Tensor::empty(x.q.shape(), DType::kBF16, kGpu);
  Tensor dk = Tensor::empty(x.k.shape(), DType::kBF16, kGpu);
  Tensor dv = Tensor::empty(x.k.shape(), DType::kBF16, kGpu);
  cuda::launch_attention_backward(cuda::ElemType::kBF16, shape, cuda::AttentionKernel::kAuto,
                                  cuda::AttentionBackward::kWgmmaFused, x.q.raw_data(),
                                  x.k.raw_data(), x.v.raw_data(), x.cu_seqlens.data<int32_t>(),
                                  out.raw_data(), lse.raw_data(), x.dout.raw_data(),
                                  delta.raw_data(), workspace.raw_data(), dq.raw_data(),
                                  dk.raw_data(), dv.raw_data(), cuda::stream_for(0));

  const std::vector<double> words = workspace.to_vector(), got = dq.to_vector();
  const auto word_float = [&](int64_t i) {
    const auto bits = static_cast<uint32_t>(static_cast<int32_t>(words[i]));
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  const int64_t tiles = n / 64 + static_cast<int64_t>(lens.size());
  const int64_t factor0 = 4 + tiles * p.h * 2 * 2048;
  std::vector<double> want(got.size());
  int64_t start = 0;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int64_t r = 0; r < lens[s]; ++r) {
      const int64_t row = start + r, tile = start / 64 + static_cast<int64_t>(s) + r / 64;
      const int rr = static_cast<int>(r % 64);
      const int t = 32 * (rr / 16) + 4 * (rr % 8), hi = (rr % 16) / 8;
      for (int64_t head = 0; head < p.h; ++head) {
        const float f = word_float(factor0 + head * n + row);
        int exponent = 0;
        ASSERT_EQ(std::frexp(f, &exponent), 0.5f) << "factor of row " << row << " head " << head;
        for (int c = 0; c < 64; ++c) {
          const int half = c / 32, cc = c % 32;
          const int64_t index = 4 + ((tile * p.h + head) * 2 + half) * 2048 +
                                ((cc / 8) * 128 + t + (cc % 8) / 2) * 4 + hi * 2 + cc % 2;
          const double sum = words[index];
          ASSERT_LE(std::fabs(sum), 1073741824.0) << "row " << row << " head " << head;
          const float value = static_cast<float>(sum) * (static_cast<float>(scale) / f);
          want[(row * p.h + head) * 64 + c] = value;
        }
      }
    }
    start += lens[s];
  }
  EXPECT_TRUE(same_bits(dq, Tensor::from_vector(want, dq.shape(), DType::kBF16)));
  expect_close(dq, reference(make_inputs(p, 340)).dq, kBf16, "dq");
}
#endif  // DTRN_WITH_CUDA

}  // namespace
}  // namespace dtrn
