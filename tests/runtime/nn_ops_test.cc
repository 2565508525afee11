// rmsnorm, rope, softmax and logsumexp: the forward against the defining formula written with plain loops, the
// backward against central finite differences in f64 (gradcheck.h) on odd sizes and non-contiguous
// inputs, f32 against the f64 reference, and argument errors naming the op and the shapes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "gradcheck.h"

namespace dtrn {
namespace {

using testing::expect_gradients_match;
using testing::random_input;
using testing::relative_error;
using testing::throws_error_naming;

// In f64 the op and the reference differ only in rounding order: ~1e-15 on values of size ~1.
constexpr double kF64Tolerance = 1e-12;
// f32 rounds inputs, weights and outputs (relative 6e-8 each) and accumulates in double.
constexpr double kF32Tolerance = 1e-6;

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
}

// ---- rmsnorm

std::vector<double> reference_rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  const std::vector<double> xs = x.to_vector(), ws = w.to_vector();
  const size_t c = ws.size();
  std::vector<double> y(xs.size());
  for (size_t row = 0; row < xs.size() / c; ++row) {
    double ms = 0;
    for (size_t i = 0; i < c; ++i) ms += xs[row * c + i] * xs[row * c + i] / c;
    for (size_t i = 0; i < c; ++i) y[row * c + i] = xs[row * c + i] / std::sqrt(ms + eps) * ws[i];
  }
  return y;
}

TEST(RmsNorm, ForwardMatchesFormula) {
  const double eps = 1e-5;
  Tensor x = random_input({2, 3, 7}, 1);
  Tensor w = random_input({7}, 2, 0.5, 1.5);
  Tensor y = rmsnorm(x, w, eps);
  ASSERT_EQ(y.shape(), x.shape());
  const std::vector<double> want = reference_rmsnorm(x, w, eps);
  expect_near_all(y.to_vector(), want, kF64Tolerance);

  Tensor y32 = rmsnorm(x.to(DType::kF32), w.to(DType::kF32), eps);
  EXPECT_EQ(y32.dtype(), DType::kF32);
  EXPECT_LT(relative_error(y32, Tensor::from_vector(want, x.shape(), DType::kF64)), kF32Tolerance);
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  auto f = [](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-5); };
  expect_gradients_match(f, {random_input({5, 7}, 3), random_input({7}, 4, 0.5, 1.5)});
  expect_gradients_match(f, {random_input({2, 3, 7}, 5), random_input({7}, 6, -1.5, 1.5)});
  // A transposed (non-contiguous) input takes the contiguous-copy path.
  expect_gradients_match(
      [](const std::vector<Tensor>& in) { return rmsnorm(in[0].transpose(0, 1), in[1], 1e-5); },
      {random_input({7, 5}, 7), random_input({7}, 8)});
}

// Above the kernel's parallel threshold (rows split across threads; the weight gradient split into
// column blocks, C = 300 leaving a partial last block), against the closed-form gradients written
// as loops: with r the row's 1/rms and W the upstream gradient,
//   dx_i = r w_i W_i - (r^3 / C) x_i sum_j W_j w_j x_j,   dw_i = sum_rows W_i x_i r.
// The small-size finite-difference checks above pin the formula; this pins the partitioning.
TEST(RmsNorm, ParallelPathMatchesClosedFormGradients) {
  const int64_t n = 96, c = 300;
  const double eps = 1e-5;
  Tensor x = random_input({n, c}, 30).set_requires_grad(true);
  Tensor w = random_input({c}, 31, 0.5, 1.5).set_requires_grad(true);
  Tensor up = random_input({n, c}, 32);
  Tensor y = rmsnorm(x, w, eps);
  expect_near_all(y.to_vector(), reference_rmsnorm(x, w, eps), kF64Tolerance);
  sum(mul(y, up)).backward();

  const std::vector<double> xs = x.to_vector(), ws = w.to_vector(), us = up.to_vector();
  std::vector<double> dx(n * c), dw(c, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    double ms = 0, dot = 0;
    for (int64_t i = 0; i < c; ++i) {
      ms += xs[r * c + i] * xs[r * c + i] / c;
      dot += us[r * c + i] * ws[i] * xs[r * c + i];
    }
    const double rs = 1.0 / std::sqrt(ms + eps);
    for (int64_t i = 0; i < c; ++i) {
      dx[r * c + i] = rs * ws[i] * us[r * c + i] - rs * rs * rs / c * xs[r * c + i] * dot;
      dw[i] += us[r * c + i] * xs[r * c + i] * rs;
    }
  }
  expect_near_all(x.grad().to_vector(), dx, kF64Tolerance);
  expect_near_all(w.grad().to_vector(), dw, 1e-10);  // sums of 96 terms of size ~1
}

TEST(RmsNorm, ErrorsNameTheOpAndShapes) {
  EXPECT_THAT(
      [] {
        rmsnorm(random_input({4, 7}, 1), random_input({6}, 2), 1e-5);
      },
      throws_error_naming("rmsnorm", "[4, 7]", "[6]"));
  EXPECT_THAT(
      [] {
        rmsnorm(random_input({4, 7}, 1), random_input({7}, 2).to(DType::kF32), 1e-5);
      },
      throws_error_naming("rmsnorm", "f64[4, 7]", "f32[7]"));
}

// ---- rope

// Rotate-half with explicit cos/sin: pair (i, i + D/2) rotates by pos * theta^(-2i/D).
std::vector<double> reference_rope(const Tensor& x, const std::vector<int64_t>& positions,
                                   double theta) {
  const int64_t n = x.size(0), h = x.size(1), d = x.size(2), half = d / 2;
  const std::vector<double> xs = x.to_vector();
  std::vector<double> out(xs.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t head = 0; head < h; ++head) {
      const double* in = xs.data() + (r * h + head) * d;
      double* o = out.data() + (r * h + head) * d;
      for (int64_t i = 0; i < half; ++i) {
        const double angle = positions[r] * std::pow(theta, -2.0 * i / d);
        o[i] = in[i] * std::cos(angle) - in[i + half] * std::sin(angle);
        o[i + half] = in[i + half] * std::cos(angle) + in[i] * std::sin(angle);
      }
    }
  }
  return out;
}

TEST(Rope, ForwardMatchesRotateHalfWithExplicitCosSin) {
  const std::vector<int64_t> positions = {0, 1, 7, 100, 3};
  Tensor x = random_input({5, 3, 6}, 9);
  const std::vector<double> want = reference_rope(x, positions, 10000.0);
  for (DType index : {DType::kI64, DType::kI32}) {
    Tensor out = rope(x, Tensor::from_ints(positions, {5}, index), 10000.0);
    ASSERT_EQ(out.shape(), x.shape());
    expect_near_all(out.to_vector(), want, kF64Tolerance);
  }
  Tensor out32 = rope(x.to(DType::kF32), Tensor::from_ints(positions, {5}), 10000.0);
  EXPECT_EQ(out32.dtype(), DType::kF32);
  EXPECT_LT(relative_error(out32, Tensor::from_vector(want, x.shape(), DType::kF64)),
            kF32Tolerance);
}

TEST(Rope, GradientsMatchFiniteDifferences) {
  for (double theta : {10000.0, 10.0}) {
    expect_gradients_match(
        [theta](const std::vector<Tensor>& in) { return rope(in[0], in[1], theta); },
        {random_input({4, 3, 6}, 10), Tensor::from_ints({0, 2, 5, 11}, {4}, DType::kI32)});
  }
}

// Above the parallel threshold. The gradient of a rotation is the rotation by the negative angle,
// which the reference produces by negating the positions.
TEST(Rope, ParallelPathMatchesReferenceForwardAndBackward) {
  const int64_t n = 512, h = 4, d = 16;
  std::vector<int64_t> positions(n), negated(n);
  for (int64_t r = 0; r < n; ++r) {
    positions[r] = (r * 37) % 1000;
    negated[r] = -positions[r];
  }
  Tensor x = random_input({n, h, d}, 33).set_requires_grad(true);
  Tensor up = random_input({n, h, d}, 34);
  Tensor out = rope(x, Tensor::from_ints(positions, {n}), 10000.0);
  expect_near_all(out.to_vector(), reference_rope(x, positions, 10000.0), kF64Tolerance);
  sum(mul(out, up)).backward();
  expect_near_all(x.grad().to_vector(), reference_rope(up, negated, 10000.0), kF64Tolerance);
}

TEST(Rope, ErrorsNameTheOpAndShapes) {
  const Tensor pos = Tensor::from_ints({0, 1}, {2});
  EXPECT_THAT(
      [&] {
        rope(random_input({2, 3, 5}, 1), pos, 10000.0);
      },
      throws_error_naming("rope", "[2, 3, 5]"));
  EXPECT_THAT(
      [] {
        rope(random_input({2, 3, 4}, 1), Tensor::from_ints({0, 1, 2}, {3}), 10000.0);
      },
      throws_error_naming("rope", "[3]", "[2, 3, 4]"));
}

// ---- softmax

// Row softmax of a row-major [rows, c] matrix with the row maximum subtracted.
std::vector<double> reference_softmax(const std::vector<double>& x, int64_t c) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / c; ++r) {
    const double m = *std::max_element(x.begin() + r * c, x.begin() + (r + 1) * c);
    double z = 0;
    for (int64_t i = 0; i < c; ++i) z += std::exp(x[r * c + i] - m);
    for (int64_t i = 0; i < c; ++i) y[r * c + i] = std::exp(x[r * c + i] - m) / z;
  }
  return y;
}

TEST(Softmax, ForwardMatchesReferenceAndRowsSumToOne) {
  // Row 2 sits near 800, where exp overflows unless the row maximum is subtracted first.
  std::vector<double> values = random_input({3, 7}, 11).to_vector();
  for (int64_t i = 0; i < 7; ++i) values[2 * 7 + i] += 800.0;
  for (DType dtype : {DType::kF64, DType::kF32}) {
    // The reference reads the values the op reads (f32 rounds 800.x by up to 3e-5).
    Tensor x = Tensor::from_vector(values, {3, 7}, dtype);
    Tensor y = softmax(x);
    EXPECT_EQ(y.dtype(), dtype);
    const std::vector<double> got = y.to_vector();
    const double tol = dtype == DType::kF64 ? kF64Tolerance : kF32Tolerance;
    expect_near_all(got, reference_softmax(x.to_vector(), 7), tol);
    for (int64_t r = 0; r < 3; ++r) {
      double total = 0;
      for (int64_t i = 0; i < 7; ++i) total += got[r * 7 + i];
      EXPECT_NEAR(total, 1.0, 7 * tol) << "row " << r;
    }
  }
}

TEST(Softmax, GradientsMatchFiniteDifferences) {
  auto f = [](const std::vector<Tensor>& in) { return softmax(in[0]); };
  expect_gradients_match(f, {random_input({3, 7}, 12, -2, 2)});
  expect_gradients_match(f, {random_input({2, 3, 5}, 13, -2, 2)});
}

// Above the parallel threshold, against the loop reference and dx = y (W - sum(W y)) per row.
TEST(Softmax, ParallelPathMatchesReferenceForwardAndBackward) {
  const int64_t n = 64, c = 300;
  Tensor x = random_input({n, c}, 35, -3, 3).set_requires_grad(true);
  Tensor up = random_input({n, c}, 36);
  Tensor y = softmax(x);
  const std::vector<double> ys = reference_softmax(x.to_vector(), c);
  expect_near_all(y.to_vector(), ys, kF64Tolerance);
  sum(mul(y, up)).backward();
  const std::vector<double> us = up.to_vector();
  std::vector<double> dx(n * c);
  for (int64_t r = 0; r < n; ++r) {
    double dot = 0;
    for (int64_t i = 0; i < c; ++i) dot += us[r * c + i] * ys[r * c + i];
    for (int64_t i = 0; i < c; ++i) dx[r * c + i] = ys[r * c + i] * (us[r * c + i] - dot);
  }
  expect_near_all(x.grad().to_vector(), dx, kF64Tolerance);
}

TEST(Softmax, RejectsAScalar) {
  EXPECT_THAT([] { softmax(Tensor::full({}, 1.0, DType::kF64)); },
              throws_error_naming("softmax", "[]"));
}

TEST(LogSumExp, ForwardMatchesTheFormulaAndGradientsMatchFiniteDifferences) {
  // Large logits too: the formula is evaluated around the row maximum, so exp never overflows.
  Tensor x = scale(random_input({7, 3}, 31), 40.0);
  const std::vector<double> xv = x.to_vector();
  std::vector<double> want;
  for (int64_t r = 0; r < 7; ++r) {
    const double m = std::max({xv[3 * r], xv[3 * r + 1], xv[3 * r + 2]});
    double s = 0;
    for (int64_t c = 0; c < 3; ++c) s += std::exp(xv[3 * r + c] - m);
    want.push_back(m + std::log(s));
  }
  expect_near_all(logsumexp(x).to_vector(), want, kF64Tolerance * 40);
  expect_near_all(logsumexp(x.to(DType::kF32)).to_vector(), want, kF32Tolerance * 40);
  expect_gradients_match([](const std::vector<Tensor>& in) { return logsumexp(in[0]); }, {random_input({5, 2}, 32)});
  EXPECT_THAT([] { logsumexp(Tensor::zeros({4}, DType::kF64)); }, throws_error_naming("logsumexp", "[4]"));
}

}  // namespace
}  // namespace dtrn
