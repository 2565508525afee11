// rmsnorm_keep, the RMSNorm that also passes its input on (a block's norm_in, whose input x also feeds the
// residual). Its contract (ops.h) is to be x and rmsnorm(x) to the bit while the passthrough has one
// consumer, so the reference here is that unfused composition on the same backend, compared by raw bits:
// outputs and every gradient, in f32 and f64, on widths and row counts that are multiples of nothing in
// particular, above and below the kernels' parallel threshold, with either output's gradient missing.
// x is an interior tensor (as a block's input is), so the unfused graph sums its gradients with add().
// Then finite differences in f64 (gradcheck.h), empty rows, and argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_compare.h"
#include "gradcheck.h"

namespace dtrn {
namespace {

using gpu_testing::expect_same_bits;
using testing::expect_gradients_match;
using testing::random_input;
using testing::throws_error_naming;

constexpr double kEps = 1e-5;

enum class Uses { kBoth, kNormedOnly, kSumOnly };

// A block's pattern: the passthrough into a residual add, the normed value into a projection.
Tensor tail(const Tensor& sum, const Tensor& normed, const Tensor& proj, Uses uses) {
  switch (uses) {
    case Uses::kBoth: return add(sum, linear(normed, proj));
    case Uses::kNormedOnly: return linear(normed, proj);
    case Uses::kSumOnly: return scale(sum, 0.75);
  }
  return Tensor();
}

void expect_kept_equals_unfused(const Shape& shape, DType dtype, Uses uses, uint64_t seed) {
  const int64_t c = shape.back();
  const Tensor x0 = random_input(shape, seed).to(dtype);
  const Tensor w0 = random_input({c}, seed + 1, 0.5, 1.5).to(dtype);
  const Tensor proj = random_input({c, c}, seed + 2).to(dtype);
  const Tensor upstream = random_input(shape, seed + 3).to(dtype);
  const std::string what = shape_str(shape) + " " + std::string(dtype_name(dtype)) + " uses " +
                           std::to_string(static_cast<int>(uses));
  auto leaf = [](const Tensor& t) { return t.detach().clone().set_requires_grad(true); };

  Tensor xk = leaf(x0), wk = leaf(w0);
  const ResidualNorm got = rmsnorm_keep(scale(xk, 0.5), wk, kEps);  // scale by 0.5: exact, interior
  tail(got.sum, got.normed, proj, uses).backward(upstream);

  Tensor xu = leaf(x0), wu = leaf(w0);
  const Tensor x = scale(xu, 0.5);
  const Tensor n = rmsnorm(x, wu, kEps);
  tail(x, n, proj, uses).backward(upstream);

  expect_same_bits(got.sum, x, what + ": passthrough");
  expect_same_bits(got.normed, n, what + ": normed");
  expect_same_bits(xk.grad(), xu.grad(), what + ": d x");
  expect_same_bits(wk.grad(), wu.grad(), what + ": d weight");
}

TEST(RmsNormKeep, BitIdenticalToTheInputAndRmsNorm) {
  // [96, 300] is above the CPU kernels' parallel threshold; [3, 11, 13] is 3-d with 33 rows.
  for (DType dtype : {DType::kF32, DType::kF64}) {
    for (const Shape& shape : {Shape{1, 1}, Shape{5, 7}, Shape{3, 11, 13}, Shape{96, 300}}) {
      for (Uses uses : {Uses::kBoth, Uses::kNormedOnly, Uses::kSumOnly}) {
        expect_kept_equals_unfused(shape, dtype, uses, 200);
      }
    }
  }
}

TEST(RmsNormKeep, ThePassthroughIsTheInputsStorage) {
  const Tensor x = random_input({4, 6}, 1);
  const ResidualNorm out = rmsnorm_keep(x, random_input({6}, 2), kEps);
  EXPECT_EQ(out.sum.raw_data(), x.raw_data());
  EXPECT_EQ(out.sum.shape(), x.shape());
}

TEST(RmsNormKeep, EmptyRowsGiveEmptyOutputsAndZeroWeightGradient) {
  Tensor x = random_input({0, 5}, 1).set_requires_grad(true), w = random_input({5}, 3).set_requires_grad(true);
  const ResidualNorm out = rmsnorm_keep(x, w, kEps);
  EXPECT_EQ(out.sum.shape(), (Shape{0, 5}));
  EXPECT_EQ(out.normed.shape(), (Shape{0, 5}));
  add(sum(out.sum), sum(out.normed)).backward();
  EXPECT_EQ(x.grad().shape(), (Shape{0, 5}));
  EXPECT_EQ(w.grad().to_vector(), std::vector<double>(5, 0.0));
}

// Both outputs in one result so that the check's random weighting reaches each (gradcheck.h).
TEST(RmsNormKeep, GradientsMatchFiniteDifferences) {
  const testing::TensorFn f = [](const std::vector<Tensor>& in) {
    const ResidualNorm out = rmsnorm_keep(in[0], in[1], kEps);
    return concat({out.sum, out.normed}, 0);
  };
  expect_gradients_match(f, {random_input({5, 7}, 10), random_input({7}, 12, 0.5, 1.5)});
  expect_gradients_match(f, {random_input({2, 3, 7}, 13), random_input({7}, 15, -1.5, 1.5)});
  // A transposed (non-contiguous) x: the passthrough keeps its strides, the norm reads a contiguous copy.
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        const ResidualNorm out = rmsnorm_keep(in[0].transpose(0, 1), in[1], kEps);
        return concat({out.sum, out.normed}, 0);
      },
      {random_input({7, 5}, 16), random_input({7}, 18)});
}

TEST(RmsNormKeep, ErrorsNameTheOpAndShapes) {
  EXPECT_THAT([] { rmsnorm_keep(random_input({4, 7}, 1), random_input({6}, 3), kEps); },
              throws_error_naming("rmsnorm_keep", "[4, 7]", "[6]"));
  EXPECT_THAT([] { rmsnorm_keep(random_input({4, 7}, 1), random_input({7}, 3).to(DType::kF32), kEps); },
              throws_error_naming("rmsnorm_keep", "f64[4, 7]", "f32[7]"));
  EXPECT_THAT([] { rmsnorm_keep(random_input({4, 7}, 1), random_input({7}, 3), -1.0); },
              throws_error_naming("rmsnorm_keep", "eps"));
}

}  // namespace
}  // namespace dtrn
