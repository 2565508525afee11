// AdamW against a hand-computed step, gradient clipping, and learning-rate schedules at their endpoints.
#include <gtest/gtest.h>

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
  AdamW opt({{"p", p, true}, {"q", q, false}}, {0.9, 0.999, 1e-8, 0.1});

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
