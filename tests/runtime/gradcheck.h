// Shared helpers of the op tests. Gradient checking: autograd's gradients of a function against
// central finite differences, everything in f64 on the CPU. And throws_error_naming(), for the
// argument errors every op must raise with its name and the offending shapes.
//
// The function may return any shape; the check differentiates L = sum(f(inputs) * W) with W a fixed random
// weighting, so every output element contributes with a different factor (a plain sum would hide errors
// that cancel, such as a softmax gradient off by a constant per row).
//
// Tolerance: with eps = 1e-6 the central difference has truncation error O(eps^2 * f''') ~ 1e-12 and
// rounding error ~ 1e-16 * |L| / eps ~ 1e-10 for |L| ~ 1, so 1e-6 relative (plus 1e-8 absolute) separates
// a correct gradient from a wrong one by orders of magnitude.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::testing {

struct GradCheckOptions {
  double eps = 1e-6;
  double atol = 1e-8;
  double rtol = 1e-6;
  uint64_t weight_seed = 1234;
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Random f64 leaf in [-1, 1) (deterministic for a given seed).
inline Tensor random_input(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return Tensor::uniform(shape, lo, hi, seed, /*stream=*/7, 0, DType::kF64);
}

// Checks every element of every floating input against the finite-difference derivative.
// Non-floating inputs (indices) are passed through untouched.
inline void expect_gradients_match(const TensorFn& f, std::vector<Tensor> inputs,
                                   GradCheckOptions opt = {}) {
  for (auto& t : inputs) {
    if (is_floating(t.dtype())) {
      ASSERT_EQ(t.dtype(), DType::kF64) << "gradcheck inputs must be f64";
      t = t.detach().clone();
      t.set_requires_grad(true);
    }
  }
  Tensor out = f(inputs);
  Tensor weights = Tensor::uniform(out.shape(), 0.5, 1.5, opt.weight_seed, 9, 0, DType::kF64);
  auto loss_of = [&](const Tensor& o) { return sum(mul(o, weights)); };
  loss_of(out).backward();

  NoGradGuard no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& x = inputs[i];
    if (!is_floating(x.dtype())) continue;
    Tensor analytic = x.grad();
    ASSERT_TRUE(analytic.defined()) << "input " << i << " received no gradient";
    std::vector<double> a = analytic.to_vector();
    double* p = x.data<double>();
    for (int64_t j = 0; j < x.numel(); ++j) {
      const double saved = p[j];
      p[j] = saved + opt.eps;
      const double up = loss_of(f(inputs)).item();
      p[j] = saved - opt.eps;
      const double down = loss_of(f(inputs)).item();
      p[j] = saved;
      const double numeric = (up - down) / (2 * opt.eps);
      ASSERT_NEAR(a[j], numeric, opt.atol + opt.rtol * std::abs(numeric))
          << "input " << i << " element " << j << " of " << x.describe();
    }
  }
}

// max |a - b| / max(max |b|, tiny): the relative error of a whole tensor against a reference.
inline double relative_error(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector(), y = b.to_vector();
  EXPECT_EQ(x.size(), y.size());
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / den;
}

// Matches a callable that throws dtrn::Error whose message contains every one of `parts`, e.g.
// EXPECT_THAT([&] { rope(x, pos, 1e4); }, throws_error_naming("rope", "[2, 3, 5]")).
template <typename... Parts>
auto throws_error_naming(const Parts&... parts) {
  return ::testing::ThrowsMessage<Error>(::testing::AllOf(::testing::HasSubstr(parts)...));
}

}  // namespace dtrn::testing
