// cross_entropy: the mean over kept rows of logsumexp(logits[:num_classes]) - logit[target] against
// a loop reference, ignored rows and padded vocabulary classes excluded; the backward against
// central finite differences in f64 (gradcheck.h); f32 against f64; the all-ignored case; argument
// errors; the backend's fused kernel against its forward plus backward kernels; the gradient the op
// makes in its forward for an expected upstream, on every path of its backward.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "../../runtime/src/backend.h"
#include "gradcheck.h"

namespace dtrn {
namespace {

using testing::expect_gradients_match;
using testing::random_input;
using testing::relative_error;
using testing::throws_error_naming;

constexpr int64_t kRows = 6, kVocab = 7;

// A case: targets (with ignored rows) and the number of real classes; classes >= num_classes are
// padding.
struct Case {
  std::vector<int64_t> targets;
  int64_t ignore_index;
  int64_t num_classes;  // -1: all kVocab
};
const Case kCases[] = {
    {{0, 4, -100, 2, -100, 1}, -100, 5},
    {{3, 0, 6, 3, 1, 2}, 3, -1},  // an ignore_index that is also a valid class id
};

// Logits in [-2, 2) with the padded classes set far above the rest: if they leaked into the
// log-sum-exp the loss would move by ~30.
Tensor make_logits(const Case& c, uint64_t seed) {
  std::vector<double> values = random_input({kRows, kVocab}, seed, -2, 2).to_vector();
  if (c.num_classes > 0) {
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = c.num_classes; i < kVocab; ++i) values[r * kVocab + i] = 30.0 + i;
    }
  }
  return Tensor::from_vector(values, {kRows, kVocab}, DType::kF64);
}

Tensor targets_of(const Case& c) {
  return Tensor::from_ints(c.targets, {static_cast<int64_t>(c.targets.size())});
}

double reference_cross_entropy(const Tensor& logits, const Case& c) {
  const int64_t n = logits.size(0), v = logits.size(1);
  const std::vector<double> l = logits.to_vector();
  const int64_t classes = c.num_classes < 0 ? v : c.num_classes;
  double total = 0;
  int64_t kept = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (c.targets[r] == c.ignore_index) continue;
    const double* row = l.data() + r * v;
    const double m = *std::max_element(row, row + classes);
    double z = 0;
    for (int64_t i = 0; i < classes; ++i) z += std::exp(row[i] - m);
    total += m + std::log(z) - row[c.targets[r]];
    ++kept;
  }
  return total / kept;
}

TEST(CrossEntropy, ForwardMatchesLogSumExpMinusTargetLogit) {
  for (const Case& c : kCases) {
    Tensor logits = make_logits(c, 1);
    Tensor loss = cross_entropy(logits, targets_of(c), c.ignore_index, c.num_classes);
    EXPECT_EQ(loss.shape(), Shape{});
    EXPECT_EQ(loss.dtype(), DType::kF64);
    // f64, rounding-order differences only.
    EXPECT_NEAR(loss.item(), reference_cross_entropy(logits, c), 1e-12);
  }
}

TEST(CrossEntropy, GradientsMatchFiniteDifferences) {
  for (const Case& c : kCases) {
    expect_gradients_match(
        [c](const std::vector<Tensor>& in) {
          return cross_entropy(in[0], in[1], c.ignore_index, c.num_classes);
        },
        {make_logits(c, 2), targets_of(c)});
  }
}

TEST(CrossEntropy, AllRowsIgnoredGivesZeroLossAndZeroGradient) {
  Tensor logits = random_input({3, 5}, 3).set_requires_grad(true);
  Tensor loss = cross_entropy(logits, Tensor::from_ints({-100, -100, -100}, {3}));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  for (double g : logits.grad().to_vector()) EXPECT_EQ(g, 0.0);
}

// f32 rounds logits, losses and gradients (relative 6e-8) with sums in double; 1e-6 is a wide
// margin.
TEST(CrossEntropy, F32AgreesWithF64) {
  for (const Case& c : kCases) {
    std::vector<Tensor> values, grads;
    for (DType dtype : {DType::kF64, DType::kF32}) {
      Tensor logits = make_logits(c, 4).to(dtype).set_requires_grad(true);
      Tensor loss = cross_entropy(logits, targets_of(c), c.ignore_index, c.num_classes);
      EXPECT_EQ(loss.dtype(), dtype);
      scale(loss, 3.0).backward();
      values.push_back(loss);
      grads.push_back(logits.grad());
    }
    EXPECT_LT(relative_error(values[1], values[0]), 1e-6);
    EXPECT_LT(relative_error(grads[1], grads[0]), 1e-6);
  }
}

// Above the parallel threshold, against the loop reference and the closed-form gradient
// upstream * (softmax over the real classes - onehot) / kept rows, 0 on ignored rows and padded
// classes.
TEST(CrossEntropy, ParallelPathMatchesReferenceForwardAndBackward) {
  const int64_t n = 64, v = 300;
  Case c{std::vector<int64_t>(n), -100, 290};
  for (int64_t r = 0; r < n; ++r) c.targets[r] = r % 5 == 0 ? -100 : (r * 53) % 290;
  Tensor logits = random_input({n, v}, 6, -3, 3).set_requires_grad(true);
  Tensor loss = cross_entropy(logits, targets_of(c), c.ignore_index, c.num_classes);
  EXPECT_NEAR(loss.item(), reference_cross_entropy(logits, c), 1e-12);
  const double upstream = 2.5;
  scale(loss, upstream).backward();

  const std::vector<double> l = logits.to_vector();
  int64_t kept = 0;
  for (int64_t t : c.targets) kept += t != c.ignore_index;
  std::vector<double> want(n * v, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    if (c.targets[r] == c.ignore_index) continue;
    double z = 0;
    for (int64_t i = 0; i < c.num_classes; ++i) z += std::exp(l[r * v + i]);
    for (int64_t i = 0; i < c.num_classes; ++i) {
      want[r * v + i] = upstream * (std::exp(l[r * v + i]) / z - (i == c.targets[r])) / kept;
    }
  }
  const std::vector<double> got = logits.grad().to_vector();
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-12) << "element " << i;
}

TEST(CrossEntropy, ErrorsNameTheOpAndShapes) {
  const Tensor logits = random_input({6, 7}, 5);
  EXPECT_THAT(
      [&] {
        cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3, 4}, {5}));
      },
      throws_error_naming("cross_entropy", "[5]", "[6, 7]"));
  EXPECT_THAT(
      [&] {
        cross_entropy(logits, Tensor::from_ints({0, 1, 2, 5, 4, 0}, {6}), -100, 5);
      },
      throws_error_naming("cross_entropy", "target 5"));
  EXPECT_THAT(
      [&] {
        cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3, 4, 0}, {6}), -100, 8);
      },
      throws_error_naming("num_classes 8", "[6, 7]"));
  // The upstream the forward makes its gradient for must be one it can divide by.
  EXPECT_THAT([&] { cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3, 4, 0}, {6}), -100, -1, 0.0); },
              throws_error_naming("cross_entropy", "expected_grad 0"));
}

// The kernels of backend.h directly: cross_entropy_fused (losses, lse and dlogits = scale * (softmax -
// onehot) in one pass) against cross_entropy followed by cross_entropy_backward with an upstream
// gradient tensor, out of place and in place (dlogits over the logits).
TEST(CrossEntropy, FusedKernelEqualsForwardPlusBackward) {
  Backend& cpu = backend_for(Device::cpu());
  const double upstream = 2.5;
  for (DType dtype : {DType::kF64, DType::kF32}) {
    for (const Case& c : kCases) {
      Tensor logits = make_logits(c, 7).to(dtype);
      Tensor targets = targets_of(c);
      const int64_t classes = c.num_classes < 0 ? kVocab : c.num_classes;
      int64_t kept = 0;
      for (int64_t t : c.targets) kept += t != c.ignore_index;
      const double scale = 1.0 / static_cast<double>(kept);

      Tensor losses = Tensor::empty({kRows}, dtype), lse = Tensor::empty({kRows}, dtype);
      Tensor dlogits = Tensor::empty({kRows, kVocab}, dtype);
      cpu.cross_entropy(logits, targets, c.ignore_index, classes, losses, lse);
      cpu.cross_entropy_backward(logits, targets, c.ignore_index, classes, lse,
                                 Tensor::full({}, upstream, dtype), scale, dlogits);

      Tensor f_losses = Tensor::empty({kRows}, dtype), f_lse = Tensor::empty({kRows}, dtype);
      Tensor f_dlogits = Tensor::empty({kRows, kVocab}, dtype);
      cpu.cross_entropy_fused(logits, targets, c.ignore_index, classes, upstream * scale, f_losses,
                              f_lse, f_dlogits);
      // The same per-row code computes the statistics.
      EXPECT_EQ(f_losses.to_vector(), losses.to_vector());
      EXPECT_EQ(f_lse.to_vector(), lse.to_vector());
      // f64: the same arithmetic, bit for bit. f32: the unfused backward reads lse rounded to f32
      // (2^-24 of |lse| < 8 moves p by < 5e-7 relative), the fused one the unrounded value.
      const std::vector<double> want = dlogits.to_vector(), got = f_dlogits.to_vector();
      const double tol = dtype == DType::kF64 ? 0.0 : 1e-6 * upstream * scale;
      for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << "element " << i;
      // Padded classes and ignored rows are exactly zero.
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t i = 0; i < kVocab; ++i) {
          if (c.targets[r] == c.ignore_index || i >= classes) {
            EXPECT_EQ(got[r * kVocab + i], 0.0);
          }
        }
      }

      Tensor in_place = logits.clone();
      cpu.cross_entropy_fused(in_place, targets, c.ignore_index, classes, upstream * scale, f_losses,
                              f_lse, in_place);
      EXPECT_EQ(in_place.to_vector(), got);
      EXPECT_EQ(f_losses.to_vector(), losses.to_vector());
    }
  }
}

// The op makes the gradient in its forward for the upstream it expects. The backward hands it on when
// the upstream is known on the host to be that value (backward()'s seed, scale() of it), and scales it
// otherwise (an upstream the host does not know, or another value). Every path against the backend's
// unfused kernels: the forward, then the backward reading the upstream from a tensor.
TEST(CrossEntropy, GradientMadeInTheForwardMatchesTheBackwardKernel) {
  Backend& cpu = backend_for(Device::cpu());
  for (DType dtype : {DType::kF64, DType::kF32}) {
    for (const Case& c : kCases) {
      const Tensor logits = make_logits(c, 11).to(dtype);
      const Tensor targets = targets_of(c);
      const int64_t classes = c.num_classes < 0 ? kVocab : c.num_classes;
      int64_t kept = 0;
      for (int64_t t : c.targets) kept += t != c.ignore_index;
      auto unfused = [&](double upstream) {
        Tensor losses = Tensor::empty({kRows}, dtype), lse = Tensor::empty({kRows}, dtype);
        Tensor dlogits = Tensor::empty({kRows, kVocab}, dtype);
        cpu.cross_entropy(logits, targets, c.ignore_index, classes, losses, lse);
        cpu.cross_entropy_backward(logits, targets, c.ignore_index, classes, lse,
                                   Tensor::full({}, upstream, dtype), 1.0 / static_cast<double>(kept),
                                   dlogits);
        return dlogits.to_vector();
      };
      // f32: the unfused backward reads lse rounded to f32, the fused one the unrounded value (see
      // FusedKernelEqualsForwardPlusBackward); the scaling pass adds one f32 rounding.
      auto expect_matches = [&](const Tensor& leaf, double upstream, const char* path) {
        const std::vector<double> want = unfused(upstream), got = leaf.grad().to_vector();
        for (size_t i = 0; i < want.size(); ++i) {
          const double tol = dtype == DType::kF64 ? 4e-16 * std::fabs(want[i])
                                                  : 1e-6 * upstream / kept + 2.4e-7 * std::fabs(want[i]);
          ASSERT_NEAR(got[i], want[i], tol) << path << " " << dtype_name(dtype) << " element " << i;
        }
      };
      {  // the trainer's form: scale(loss, 1 / accumulation steps).backward(), expected
        Tensor leaf = logits.clone().set_requires_grad(true);
        scale(cross_entropy(leaf, targets, c.ignore_index, c.num_classes, 0.25), 0.25).backward();
        if (dtype == DType::kF64) {  // the same arithmetic on the same values, bit for bit
          EXPECT_EQ(leaf.grad().to_vector(), unfused(0.25));
        }
        expect_matches(leaf, 0.25, "expected upstream");
      }
      {  // plain loss.backward(): the seed 1 is the default expectation
        Tensor leaf = logits.clone().set_requires_grad(true);
        cross_entropy(leaf, targets, c.ignore_index, c.num_classes).backward();
        expect_matches(leaf, 1.0, "seed");
      }
      {  // another value than expected
        Tensor leaf = logits.clone().set_requires_grad(true);
        scale(cross_entropy(leaf, targets, c.ignore_index, c.num_classes, 0.25), 3.0).backward();
        expect_matches(leaf, 3.0, "other upstream");
      }
      {  // a gradient the caller made: its value is not known to the op
        Tensor leaf = logits.clone().set_requires_grad(true);
        cross_entropy(leaf, targets, c.ignore_index, c.num_classes).backward(Tensor::full({}, 1.0, dtype));
        expect_matches(leaf, 1.0, "caller's gradient");
      }
    }
  }
}

// Tensor::known_value: backward()'s seed is 1 and scale() keeps it known in the tensor's dtype; what a
// caller makes, and what other ops make, is not known.
TEST(CrossEntropy, KnownUpstreamValuesFollowTheSeedThroughScale) {
  std::vector<std::optional<double>> seen;
  Tensor x = Tensor::full({}, 2.0).set_requires_grad(true);
  auto spy = [&] {  // records the gradient it receives
    return record("spy", x.detach().clone(), {x}, [&seen](const Tensor& g) -> std::vector<Tensor> {
      seen.push_back(g.known_value());
      return {g};
    });
  };
  scale(spy(), 0.1).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], std::optional<double>(static_cast<float>(0.1)));
  Tensor twice = spy();
  scale(add(twice, twice), 0.5).backward();  // accumulate() adds the two gradients: not known
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], std::nullopt);
  spy().backward(Tensor::full({}, 1.0));  // the caller's gradient
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2], std::nullopt);
  EXPECT_FALSE(Tensor::full({}, 1.0).known_value().has_value());
}

}  // namespace
}  // namespace dtrn
