// AdamW against a hand-computed step, gradient clipping, and learning-rate schedules at their endpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "dtrn/runtime/optim.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {
namespace {

TEST(AdamW, FirstTwoStepsMatchTheFormulaWorkedByHand) {
  Tensor p = Tensor::from_vector({1.0, -2.0}, {2}, DType::kF64);
  p.set_requires_grad(true);
  Tensor q = Tensor::from_vector({0.5}, {1}, DType::kF64);
  q.set_requires_grad(true);
  AdamW opt({{"p", p, true, Tensor(), false}, {"q", q, false, Tensor(), false}}, {0.9, 0.999, 1e-8, 0.1});

  // Step 1, g = (0.5, -1): m = 0.1 g, v = 0.001 g^2, m^ = g, v^ = g^2, update = g / (|g| + eps).
  p.set_grad(Tensor::from_vector({0.5, -1.0}, {2}, DType::kF64));
  q.set_grad(Tensor::from_vector({2.0}, {1}, DType::kF64));
  opt.step(0.01);
  const double u0 = 0.5 / (0.5 + 1e-8), u1 = -1.0 / (1.0 + 1e-8);
  std::vector<double> p1 = {1.0 - 0.01 * (u0 + 0.1 * 1.0), -2.0 - 0.01 * (u1 + 0.1 * -2.0)};
  EXPECT_NEAR(p.to_vector()[0], p1[0], 1e-15);
  EXPECT_NEAR(p.to_vector()[1], p1[1], 1e-15);
  EXPECT_NEAR(q.to_vector()[0], 0.5 - 0.01 * (2.0 / (2.0 + 1e-8)), 1e-15);  // no decay on q

  // Step 2, g = (0.25, 0.5): worked with the recurrences. q has no gradient and must not move.
  q.zero_grad();
  p.set_grad(Tensor::from_vector({0.25, 0.5}, {2}, DType::kF64));
  opt.step(0.02);
  const double g0[2] = {0.5, -1.0}, g1[2] = {0.25, 0.5};
  for (int i = 0; i < 2; ++i) {
    const double m = 0.9 * 0.1 * g0[i] + 0.1 * g1[i];
    const double v = 0.999 * 0.001 * g0[i] * g0[i] + 0.001 * g1[i] * g1[i];
    const double mh = m / (1 - 0.81), vh = v / (1 - 0.999 * 0.999);
    const double expect = p1[i] - 0.02 * (mh / (std::sqrt(vh) + 1e-8) + 0.1 * p1[i]);
    EXPECT_NEAR(p.to_vector()[i], expect, 1e-14);
  }
  EXPECT_EQ(opt.step_count(), 2);
  EXPECT_NEAR(q.to_vector()[0], 0.5 - 0.01 * (2.0 / (2.0 + 1e-8)), 1e-15);
}

// Tensor parallelism's norm: the sharded parameter's squared gradient goes through the sum (here a
// stand-in for two TP ranks holding equal slices: it doubles), the replicated one counts once, and the
// clipping uses that norm. f64, values exact in binary: compared exactly.
TEST(AdamW, TheShardedNormIsSummedOverTheGroupAndTheReplicatedCountedOnce) {
  Tensor sharded = Tensor::from_vector({1.0, 2.0}, {2}, DType::kF64).set_requires_grad(true);
  Tensor replicated = Tensor::from_vector({0.0}, {1}, DType::kF64).set_requires_grad(true);
  sharded.set_grad(Tensor::from_vector({3.0, 4.0}, {2}, DType::kF64));
  replicated.set_grad(Tensor::from_vector({2.0}, {1}, DType::kF64));
  EXPECT_EQ(grad_sum_squares({sharded, replicated}, Device::cpu()).item(), 29.0);
  AdamW opt({{"s", sharded, false, Tensor(), true}, {"r", replicated, false, Tensor(), false}}, {0.9, 0.999, 1e-8, 0.0});
  int calls = 0;
  opt.set_shard_norm_sum([&calls](const Tensor& sq) {
    ++calls;
    sq.copy_(scale(sq, 2.0));
  });
  EXPECT_EQ(opt.clip_and_step(0.01, 0.0).item(), 2 * 25.0 + 4.0);
  EXPECT_EQ(calls, 1);
}

// f32 parameters (the training dtype), clipped:// f32 parameters (the training dtype), clipped: each element against the formula evaluated in f64 on
// the same f32 inputs. The kernel computes in double and rounds m, v and p once each to f32, so the
// result is within a few f32 ulps (relative 1e-6).
TEST(AdamW, F32ClippedStepMatchesTheF64Formula) {
  const int64_t n = 1000;
  Tensor p = Tensor::uniform({n}, -1, 1, 1, 1, 0, DType::kF32).set_requires_grad(true);
  const Tensor g = Tensor::uniform({n}, -2, 2, 2, 1, 0, DType::kF32);
  p.set_grad(g);
  const std::vector<double> p0 = p.to_vector(), gv = g.to_vector();
  AdamW opt({{"p", p, true, Tensor(), false}}, {0.9, 0.95, 1e-8, 0.1});
  const double norm = std::sqrt(opt.clip_and_step(0.01, 1.0).item());
  double ss = 0;
  for (double x : gv) ss += x * x;
  EXPECT_NEAR(norm, std::sqrt(ss), 1e-9 * std::sqrt(ss));
  const double clip = 1.0 / std::sqrt(ss);  // the norm is about 36: clipping applies
  const std::vector<double> p1 = p.to_vector();
  for (int64_t i = 0; i < n; ++i) {
    const double gi = gv[i] * clip;
    const double m = 0.1 * gi, v = 0.05 * gi * gi;
    const double expect = p0[i] - 0.01 * ((m / 0.1) / (std::sqrt(v / 0.05) + 1e-8) + 0.1 * p0[i]);
    EXPECT_NEAR(p1[i], expect, 1e-6 * std::max(1.0, std::fabs(expect))) << i;
  }
}

TEST(ClipGradNorm, ScalesToTheMaximumOnlyWhenAbove) {
  Tensor a = Tensor::zeros({2}, DType::kF64), b = Tensor::zeros({1}, DType::kF64);
  a.set_grad(Tensor::from_vector({3, 0}, {2}, DType::kF64));
  b.set_grad(Tensor::from_vector({4}, {1}, DType::kF64));
  EXPECT_DOUBLE_EQ(grad_global_norm({a, b}), 5.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 10.0), 5.0);
  EXPECT_EQ(a.grad().to_vector(), (std::vector<double>{3, 0}));
  EXPECT_DOUBLE_EQ(clip_grad_norm({a, b}, 1.0), 5.0);
  EXPECT_NEAR(a.grad().to_vector()[0], 0.6, 1e-15);
  EXPECT_NEAR(b.grad().to_vector()[0], 0.8, 1e-15);
  EXPECT_NEAR(grad_global_norm({a, b}), 1.0, 1e-15);
}

TEST(Schedule, WarmupCosineAndLinearEndpoints) {
  const double peak = 3e-4, floor = 1e-5;
  EXPECT_DOUBLE_EQ(lr_at(0, 10, 100, peak, floor), peak / 10);
  EXPECT_DOUBLE_EQ(lr_at(9, 10, 100, peak, floor), peak);
  EXPECT_DOUBLE_EQ(lr_at(10, 10, 100, peak, floor), peak);  // decay starts from the peak
  EXPECT_NEAR(lr_at(55, 10, 100, peak, floor), floor + (peak - floor) * 0.5, 1e-15);  // cosine midpoint
  EXPECT_DOUBLE_EQ(lr_at(100, 10, 100, peak, floor), floor);
  EXPECT_DOUBLE_EQ(lr_at(1000, 10, 100, peak, floor), floor);
  EXPECT_NEAR(lr_at(55, 10, 100, peak, floor, DecayShape::kLinear), floor + (peak - floor) * 0.5, 1e-15);
  EXPECT_NEAR(lr_at(99, 10, 100, peak, 0, DecayShape::kLinear), peak / 90, 1e-15);
  EXPECT_DOUBLE_EQ(lr_at(0, 0, 100, peak, floor), peak);  // no warm-up
  // Monotone decay after warm-up.
  for (int s = 10; s < 100; ++s) EXPECT_GE(lr_at(s, 10, 100, peak, floor), lr_at(s + 1, 10, 100, peak, floor));
}

}  // namespace
}  // namespace dtrn

namespace dtrn {
namespace {

// The multi-tensor CUDA update against the CPU's: f32 masters of odd sizes (one spans several chunks of
// the kernel's table), bf16 compute copies, clipping active, three steps, through the optimizer. The
// update itself is bit-identical given one norm (cuda_adamw_test.cc), but each backend sums its own
// norm in its own order, so the clipping scales may differ in their last bits and move a result by an
// f32 rounding step per step (relative 3e-7 after three); each compute copy is exactly its master
// rounded to bf16.
TEST(CudaAdamW, MultiTensorStepMatchesTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  const std::vector<int64_t> sizes = {1, 33, 70000, 4097};
  std::vector<ParamGroupEntry> cpu, gpu;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = Tensor::uniform({sizes[i]}, -1, 1, 10 + i, 1, 0, DType::kF32);
    Tensor pc = p.clone().set_requires_grad(true);
    Tensor pg = p.to(Device::cuda());
    Tensor cg = pg.to(DType::kBF16).set_requires_grad(true);
    cpu.push_back({"p" + std::to_string(i), pc, i % 2 == 0, Tensor()});
    gpu.push_back({"p" + std::to_string(i), pg, i % 2 == 0, cg});
  }
  AdamW oc(cpu, {0.9, 0.95, 1e-8, 0.1}), og(gpu, {0.9, 0.95, 1e-8, 0.1});
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor g = Tensor::uniform({sizes[i]}, -1, 1, 100 * step + i, 2, 0, DType::kF32);
      cpu[i].param.set_grad(g);
      gpu[i].compute.set_grad(g.to(Device::cuda()));
    }
    const double nc = oc.clip_and_step(0.01, 5.0).item(), ng = og.clip_and_step(0.01, 5.0).item();
    EXPECT_NEAR(ng, nc, 1e-6 * nc);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<double> want = cpu[i].param.to_vector(), got = gpu[i].param.to_vector();
    for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], 3e-7 * std::max(1.0, std::fabs(want[k])));
    EXPECT_EQ(gpu[i].compute.to_vector(), gpu[i].param.to(DType::kBF16).to_vector());
  }
}

}  // namespace
}  // namespace dtrn
