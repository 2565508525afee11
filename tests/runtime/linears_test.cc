// linears(x, {W_i}), one input through several weights with the input's gradient summed inside the
// products. Reference: separate linear() calls whose gradients the autograd engine adds. The forward
// and the weights' gradients are the same products on the same backend, so they must match bit for bit;
// x's gradient differs only in summation order (rounding). Odd shapes, 2-D and 3-D inputs, outputs
// without a gradient, inputs without one, empty rows and empty weights; then finite differences in f64
// (gradcheck.h), and argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_compare.h"
#include "gradcheck.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using testing::expect_gradients_match;
using testing::random_input;
using testing::relative_error;
using testing::throws_error_naming;

struct Run {
  std::vector<Tensor> outputs;
  Tensor dx;
  std::vector<Tensor> dweights;
};

// Forward through linears (fused) or linear calls, then backward of sum_i sum(y_i * R_i) over the outputs
// in `used` only.
Run run(bool fused, const Tensor& x_in, const std::vector<Tensor>& w_in, const std::vector<bool>& used,
        bool x_grad, bool w_grad) {
  Tensor x = x_in.detach().clone().set_requires_grad(x_grad);
  std::vector<Tensor> ws;
  for (const Tensor& w : w_in) ws.push_back(w.detach().clone().set_requires_grad(w_grad));
  std::vector<Tensor> ys;
  if (fused) {
    ys = linears(x, ws);
  } else {
    for (const Tensor& w : ws) ys.push_back(linear(x, w));
  }
  Tensor loss;
  for (size_t i = 0; i < ys.size(); ++i) {
    if (!used[i]) continue;
    const Tensor r = random_input(ys[i].shape(), 300 + i).to(x.dtype());
    const Tensor term = sum(mul(ys[i], r));
    loss = loss.defined() ? add(loss, term) : term;
  }
  loss.backward();
  Run out{ys, x.grad(), {}};
  for (const Tensor& w : ws) out.dweights.push_back(w.grad());
  return out;
}

// x's gradient within `tol` (relative to its largest element), everything else bit for bit.
void expect_linears_match(const Shape& x_shape, const std::vector<int64_t>& outs, const std::vector<bool>& used,
                          DType dtype, double tol, bool x_grad = true, bool w_grad = true) {
  const Tensor x = random_input(x_shape, 1).to(dtype);
  std::vector<Tensor> ws;
  for (size_t i = 0; i < outs.size(); ++i) ws.push_back(random_input({outs[i], x_shape.back()}, 10 + i).to(dtype));
  std::string what = shape_str(x_shape) + " " + std::string(dtype_name(dtype)) + " into";
  for (int64_t o : outs) what += " " + std::to_string(o);
  const Run got = run(true, x, ws, used, x_grad, w_grad), want = run(false, x, ws, used, x_grad, w_grad);
  for (size_t i = 0; i < outs.size(); ++i) {
    ASSERT_EQ(got.outputs[i].shape(), want.outputs[i].shape()) << what;
    EXPECT_EQ(bits_of(got.outputs[i]), bits_of(want.outputs[i])) << what << ": output " << i;
    ASSERT_EQ(got.dweights[i].defined(), want.dweights[i].defined()) << what << ": weight " << i;
    if (want.dweights[i].defined()) {
      EXPECT_EQ(bits_of(got.dweights[i]), bits_of(want.dweights[i])) << what << ": weight gradient " << i;
    }
  }
  ASSERT_EQ(got.dx.defined(), want.dx.defined()) << what;
  if (!want.dx.defined()) return;
  ASSERT_EQ(got.dx.shape(), want.dx.shape()) << what;
  ASSERT_EQ(got.dx.dtype(), dtype) << what;
  EXPECT_LE(relative_error(got.dx, want.dx), tol) << what << ": input gradient";
}

// f64: the two sums differ in the order of at most 3 terms of ~K products each: a few ulps (1e-16) of the
// largest element; 1e-12 leaves four orders of headroom while any wrong term would be O(1).
constexpr double kF64Tol = 1e-12;
// f32: the same with 2^-24 ulps: errors ~1e-7 of the largest element; 1e-5 leaves two orders of headroom.
constexpr double kF32Tol = 1e-5;

TEST(Linears, MatchSeparateLinearsForwardAndEveryGradient) {
  for (DType dtype : {DType::kF64, DType::kF32}) {
    const double tol = dtype == DType::kF64 ? kF64Tol : kF32Tol;
    expect_linears_match({7, 13}, {5, 3, 11}, {true, true, true}, dtype, tol);     // q, k, v
    expect_linears_match({2, 9, 13}, {17, 17}, {true, true}, dtype, tol);          // gate, up; 3-D x
    expect_linears_match({1, 1}, {1}, {true}, dtype, tol);
    expect_linears_match({96, 300}, {64, 32, 32}, {true, true, true}, dtype, tol);  // above BLAS blocking
  }
}

TEST(Linears, OutputsWithoutGradientAreSkipped) {
  for (DType dtype : {DType::kF64, DType::kF32}) {
    const double tol = dtype == DType::kF64 ? kF64Tol : kF32Tol;
    expect_linears_match({7, 13}, {5, 3, 11}, {true, false, true}, dtype, tol);
    expect_linears_match({7, 13}, {5, 3, 11}, {false, false, true}, dtype, tol);  // the last one only
    expect_linears_match({7, 13}, {5, 3, 11}, {false, true, false}, dtype, tol);
  }
}

TEST(Linears, InputsWithoutGradient) {
  expect_linears_match({7, 13}, {5, 3}, {true, true}, DType::kF64, kF64Tol, /*x_grad=*/false, /*w_grad=*/true);
  expect_linears_match({7, 13}, {5, 3}, {true, true}, DType::kF64, kF64Tol, /*x_grad=*/true, /*w_grad=*/false);
}

TEST(Linears, EmptyRowsAndEmptyWeights) {
  // No rows: empty outputs, an empty input gradient, zero weight gradients (as linear's).
  expect_linears_match({0, 6}, {4, 5}, {true, true}, DType::kF64, kF64Tol);
  // A weight with no rows contributes nothing: its output is [N, 0]; x's gradient is the others' (or zero).
  expect_linears_match({3, 6}, {0, 4}, {true, true}, DType::kF64, kF64Tol);
  expect_linears_match({3, 6}, {4, 0}, {true, true}, DType::kF64, kF64Tol);
  expect_linears_match({3, 6}, {0}, {true}, DType::kF64, kF64Tol);
}

TEST(Linears, NoGradientRecordedWithoutAnInputThatNeedsOne) {
  const std::vector<Tensor> ys = linears(random_input({3, 4}, 1), {random_input({2, 4}, 2)});
  EXPECT_FALSE(ys[0].requires_grad());
  EXPECT_EQ(ys[0].grad_fn(), nullptr);
}

// All outputs in one result so that the check's random weighting reaches each (gradcheck.h); a
// transposed (non-contiguous) x takes the contiguous-copy path.
TEST(Linears, GradientsMatchFiniteDifferences) {
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> ys = linears(in[0], {in[1], in[2], in[3]});
        return concat(ys, 1);
      },
      {random_input({5, 6}, 20), random_input({3, 6}, 21), random_input({2, 6}, 22), random_input({4, 6}, 23)});
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> ys = linears(in[0].transpose(0, 1), {in[1], in[2]});
        return concat(ys, 1);
      },
      {random_input({6, 5}, 24), random_input({3, 6}, 25), random_input({2, 6}, 26)});
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        const std::vector<Tensor> ys = linears(in[0], {in[1], in[2]});
        return concat(ys, 2);
      },
      {random_input({2, 3, 6}, 27), random_input({3, 6}, 28), random_input({4, 6}, 29)});
}

TEST(Linears, ErrorsNameTheOpAndShapes) {
  EXPECT_THAT([] { linears(random_input({4, 7}, 1), {}); }, throws_error_naming("linears", "[4, 7]"));
  EXPECT_THAT([] { linears(random_input({4, 7}, 1), {random_input({3, 7}, 2), random_input({3, 6}, 3)}); },
              throws_error_naming("linears", "[4, 7]", "[3, 6]"));
  EXPECT_THAT([] { linears(random_input({4, 7}, 1), {random_input({7}, 2)}); },
              throws_error_naming("linears", "[7]"));
  EXPECT_THAT([] { linears(random_input({4, 7}, 1), {random_input({3, 7}, 2).to(DType::kF32)}); },
              throws_error_naming("linears", "f64[4, 7]", "f32[3, 7]"));
}

}  // namespace
}  // namespace dtrn
