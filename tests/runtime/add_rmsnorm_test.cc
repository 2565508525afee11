// add_rmsnorm, the residual add fused with the RMSNorm that reads it. Its contract (ops.h) is to be
// add then rmsnorm to the bit, so the reference here is that unfused composition run on the same
// backend, compared by raw bits: outputs and every gradient, in f32 and f64, on row counts and widths
// that are multiples of nothing in particular, above and below the kernels' parallel threshold, and
// with either output's gradient missing. The two outputs feed a block's pattern (the sum into a
// residual add, the normed value into a SwiGLU MLP, so it has two consumers). Then finite
// differences in f64 (gradcheck.h), and argument errors.
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

// Which outputs the downstream graph reads.
enum class Uses { kBoth, kNormedOnly, kSumOnly };

struct Inputs {
  Tensor x, delta, weight;
};

Inputs leaves(const Inputs& in) {
  auto leaf = [](const Tensor& t) { return t.detach().clone().set_requires_grad(true); };
  return {leaf(in.x), leaf(in.delta), leaf(in.weight)};
}

struct Mlp {
  Tensor gate, up, down;  // [F, C], [F, C], [C, F]; no gradient needed
};

// A block's tail: out = sum + MLP(normed), or just one of the two terms. The fused and the unfused
// runs call it with their own (sum, normed).
Tensor block_tail(const Tensor& sum, const Tensor& normed, const Mlp& mlp, Uses uses) {
  const int64_t c = normed.size(-1);
  auto mlp_of = [&] {
    const Tensor rows = normed.reshape({-1, c});
    return swiglu_linear(linear(rows, mlp.gate), linear(rows, mlp.up), mlp.down).reshape(normed.shape());
  };
  switch (uses) {
    case Uses::kBoth: return add(sum, mlp_of());
    case Uses::kNormedOnly: return mlp_of();
    case Uses::kSumOnly: return scale(sum, 0.75);
  }
  return Tensor();
}

void expect_fused_equals_unfused(const Shape& shape, DType dtype, Uses uses, uint64_t seed) {
  const int64_t c = shape.back(), f = 2 * c + 3;
  const Inputs base{random_input(shape, seed).to(dtype), random_input(shape, seed + 1).to(dtype),
                    random_input({c}, seed + 2, 0.5, 1.5).to(dtype)};
  const Mlp mlp{random_input({f, c}, seed + 3).to(dtype), random_input({f, c}, seed + 4).to(dtype),
                random_input({c, f}, seed + 5).to(dtype)};
  const Tensor upstream = random_input(shape, seed + 6).to(dtype);
  const std::string what = shape_str(shape) + " " + std::string(dtype_name(dtype)) + " uses " +
                           std::to_string(static_cast<int>(uses));

  const Inputs fused = leaves(base);
  const ResidualNorm got = add_rmsnorm(fused.x, fused.delta, fused.weight, kEps);
  block_tail(got.sum, got.normed, mlp, uses).backward(upstream);

  const Inputs unfused = leaves(base);
  const Tensor h = add(unfused.x, unfused.delta);
  const Tensor n = rmsnorm(h, unfused.weight, kEps);
  block_tail(h, n, mlp, uses).backward(upstream);

  expect_same_bits(got.sum, h, what + ": sum");
  expect_same_bits(got.normed, n, what + ": normed");
  expect_same_bits(fused.x.grad(), unfused.x.grad(), what + ": d x");
  expect_same_bits(fused.delta.grad(), unfused.delta.grad(), what + ": d delta");
  expect_same_bits(fused.weight.grad(), unfused.weight.grad(), what + ": d weight");
}

TEST(AddRmsNorm, BitIdenticalToAddThenRmsNorm) {
  // [96, 300] is above the CPU kernels' parallel threshold (rows split across threads, the weight
  // gradient across column blocks with a partial last one); [3, 11, 13] is 3-d with 33 rows.
  for (DType dtype : {DType::kF32, DType::kF64}) {
    for (const Shape& shape : {Shape{1, 1}, Shape{5, 7}, Shape{3, 11, 13}, Shape{96, 300}}) {
      for (Uses uses : {Uses::kBoth, Uses::kNormedOnly, Uses::kSumOnly}) {
        expect_fused_equals_unfused(shape, dtype, uses, 100);
      }
    }
  }
}

TEST(AddRmsNorm, MissingNormedGradientLeavesTheWeightWithout) {
  Inputs in = leaves({random_input({4, 6}, 1), random_input({4, 6}, 2), random_input({6}, 3)});
  const Tensor upstream = random_input({4, 6}, 4);
  add_rmsnorm(in.x, in.delta, in.weight, kEps).sum.backward(upstream);
  EXPECT_EQ(in.x.grad().to_vector(), upstream.to_vector());
  EXPECT_EQ(in.delta.grad().to_vector(), upstream.to_vector());
  EXPECT_FALSE(in.weight.grad().defined());
}

TEST(AddRmsNorm, EmptyRowsGiveEmptyOutputsAndZeroWeightGradient) {
  Inputs in = leaves({random_input({0, 5}, 1), random_input({0, 5}, 2), random_input({5}, 3)});
  const ResidualNorm out = add_rmsnorm(in.x, in.delta, in.weight, kEps);
  EXPECT_EQ(out.sum.shape(), (Shape{0, 5}));
  EXPECT_EQ(out.normed.shape(), (Shape{0, 5}));
  add(sum(out.sum), sum(out.normed)).backward();
  EXPECT_EQ(in.x.grad().shape(), (Shape{0, 5}));
  EXPECT_EQ(in.weight.grad().to_vector(), std::vector<double>(5, 0.0));
}

// Both outputs in one result so that the check's random weighting reaches each (gradcheck.h).
TEST(AddRmsNorm, GradientsMatchFiniteDifferences) {
  const testing::TensorFn f = [](const std::vector<Tensor>& in) {
    const ResidualNorm out = add_rmsnorm(in[0], in[1], in[2], kEps);
    return concat({out.sum, out.normed}, 0);
  };
  expect_gradients_match(f, {random_input({5, 7}, 10), random_input({5, 7}, 11), random_input({7}, 12, 0.5, 1.5)});
  expect_gradients_match(f, {random_input({2, 3, 7}, 13), random_input({2, 3, 7}, 14), random_input({7}, 15, -1.5, 1.5)});
  // A transposed (non-contiguous) delta takes the contiguous-copy path.
  expect_gradients_match(
      [](const std::vector<Tensor>& in) {
        const ResidualNorm out = add_rmsnorm(in[0], in[1].transpose(0, 1), in[2], kEps);
        return concat({out.sum, out.normed}, 0);
      },
      {random_input({5, 7}, 16), random_input({7, 5}, 17), random_input({7}, 18)});
}

TEST(AddRmsNorm, ErrorsNameTheOpAndShapes) {
  EXPECT_THAT([] { add_rmsnorm(random_input({4, 7}, 1), random_input({4, 6}, 2), random_input({7}, 3), kEps); },
              throws_error_naming("add_rmsnorm", "[4, 7]", "[4, 6]"));
  EXPECT_THAT([] { add_rmsnorm(random_input({4, 7}, 1), random_input({4, 7}, 2), random_input({6}, 3), kEps); },
              throws_error_naming("add_rmsnorm", "[4, 7]", "[6]"));
  EXPECT_THAT(
      [] {
        add_rmsnorm(random_input({4, 7}, 1), random_input({4, 7}, 2).to(DType::kF32), random_input({7}, 3), kEps);
      },
      throws_error_naming("add_rmsnorm", "f64[4, 7]", "f32[4, 7]"));
}

}  // namespace
}  // namespace dtrn
