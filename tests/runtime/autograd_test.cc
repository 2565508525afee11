// The autograd engine: accumulation where paths meet, leaves, no-grad scopes, release of saved tensors,
// nodes with several outputs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "gradcheck.h"

namespace dtrn {
namespace {

using ::testing::HasSubstr;

Tensor leaf(const std::vector<double>& v, const Shape& s) {
  Tensor t = Tensor::from_vector(v, s, DType::kF64);
  t.set_requires_grad(true);
  return t;
}

TEST(Autograd, GradientsMeetAndSumAtAReusedTensor) {
  // f = sum(x*x + x) => df/dx = 2x + 1; x reaches the sum through three paths.
  Tensor x = leaf({1, -2, 3}, {3});
  sum(add(mul(x, x), x)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3, -3, 7}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCallsUntilZeroed) {
  Tensor x = leaf({1, 2}, {2});
  sum(scale(x, 3)).backward();
  sum(scale(x, 3)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{6, 6}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, PostAccumulateHookRunsOnceAfterTheLastContribution) {
  // x reaches the loss through three paths that backward visits at different times; the hook must see the
  // finished gradient 2x + 1 + 5 (never a partial sum), once per backward, and w's hook only w's.
  Tensor x = leaf({1, -2, 3}, {3});
  Tensor w = leaf({4, 5, 6}, {3});
  std::vector<std::vector<double>> seen_x;
  int w_calls = 0;
  register_post_accumulate_grad_hook(x, [&] { seen_x.push_back(x.grad().to_vector()); });
  register_post_accumulate_grad_hook(w, [&] { ++w_calls; });
  Tensor deep = sum(mul(add(mul(x, x), x), Tensor::full({3}, 1.0, DType::kF64)));
  add(add(deep, sum(scale(x, 5))), sum(mul(w, w))).backward();
  ASSERT_EQ(seen_x.size(), 1u);
  EXPECT_EQ(seen_x[0], (std::vector<double>{8, 2, 12}));
  EXPECT_EQ(w_calls, 1);
  // A second backward accumulates on top and runs the hook again with the sum of both.
  sum(scale(x, 1)).backward();
  ASSERT_EQ(seen_x.size(), 2u);
  EXPECT_EQ(seen_x[1], (std::vector<double>{9, 3, 13}));
  EXPECT_EQ(w_calls, 1);
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y;
  {
    NoGradGuard guard;
    EXPECT_FALSE(grad_mode_enabled());
    y = mul(x, x);
  }
  EXPECT_TRUE(grad_mode_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_THROW(sum(y).backward(), Error);
}

TEST(Autograd, OnlyInputsThatRequireGradReceiveOne) {
  Tensor x = leaf({1, 2}, {2});
  Tensor c = Tensor::from_vector({5, 7}, {2}, DType::kF64);
  sum(mul(x, c)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{5, 7}));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, SavedTensorsAreReleasedAfterBackward) {
  Tensor x = leaf({1, 2, 3}, {3});
  Tensor big = Tensor::uniform({1000}, 0, 1, 1, 1, 0, DType::kF64);
  std::weak_ptr<TensorImpl> saved;
  Tensor loss;
  {
    Tensor w = big.narrow(0, 0, 3).clone();
    saved = w.impl_ptr();
    loss = sum(mul(x, w));  // the mul node captures w (detached alias of the same storage)
  }
  loss.backward();
  // The node released its captures: a second backward through it is an error naming the op.
  try {
    loss.backward();
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("second time"));
  }
  EXPECT_TRUE(saved.expired());
}

TEST(Autograd, GraphIsFreedWhenTheOutputGoes) {
  std::weak_ptr<Node> node;
  Tensor x = leaf({1, 2, 3}, {3});
  {
    Tensor y = mul(x, x);
    node = y.grad_fn();
    Tensor z = sum(y);
    EXPECT_FALSE(node.expired());
  }
  EXPECT_TRUE(node.expired());  // no reference cycle keeps the graph alive (autograd.h, Saving outputs)
}

TEST(Autograd, LeafGradientsOwnTheirStorage) {
  // add's backward hands the same gradient to both inputs; scaling one leaf's grad in place must not
  // change the other's.
  Tensor a = leaf({1, 1}, {2}), b = leaf({2, 2}, {2});
  sum(add(a, b)).backward();
  EXPECT_NE(a.grad().raw_data(), b.grad().raw_data());
  a.grad().fill_(5);
  EXPECT_EQ(b.grad().to_vector(), (std::vector<double>{1, 1}));
}

// Outputs (2x, 3x) of one node: its backward must run once, seeing every output's gradient, or an
// undefined one for an output nothing used (Note [Nodes with several outputs]).
struct TwoOutputs {
  std::vector<Tensor> out;
  std::shared_ptr<std::vector<std::vector<bool>>> seen = std::make_shared<std::vector<std::vector<bool>>>();
};

TwoOutputs doubled_and_tripled(const Tensor& x) {
  TwoOutputs r;
  Tensor two, three;
  {
    NoGradGuard no_grad;
    two = scale(x, 2);
    three = scale(x, 3);
  }
  r.out = record_outputs("doubled_and_tripled", {two, three}, {x},
                         [seen = r.seen](const std::vector<Tensor>& g) -> std::vector<Tensor> {
                           seen->push_back({g[0].defined(), g[1].defined()});
                           if (!g[1].defined()) return {scale(g[0], 2)};
                           if (!g[0].defined()) return {scale(g[1], 3)};
                           return {add(scale(g[0], 2), scale(g[1], 3))};
                         });
  return r;
}

TEST(Autograd, ANodeWithSeveralOutputsRunsOnceWithEveryOutputsGradient) {
  Tensor x = leaf({1, -2}, {2});
  TwoOutputs both = doubled_and_tripled(x);
  ASSERT_EQ(both.out[0].grad_fn(), both.out[1].grad_fn());
  // Each output reaches the loss through two consumers of its own, whose gradients meet first.
  Tensor loss = add(add(sum(mul(both.out[0], both.out[0])), sum(scale(both.out[0], 5))),
                    add(sum(scale(both.out[1], 7)), sum(both.out[1])));
  loss.backward();
  // d/dx of (2x)^2 + 5 (2x) + 7 (3x) + 3x = 8x + 10 + 21 + 3.
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{42, 18}));
  EXPECT_EQ(*both.seen, (std::vector<std::vector<bool>>{{true, true}}));

  // The second output unused: its gradient is undefined.
  x.zero_grad();
  TwoOutputs first = doubled_and_tripled(x);
  sum(first.out[0]).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 2}));
  EXPECT_EQ(*first.seen, (std::vector<std::vector<bool>>{{true, false}}));

  // Backward from the second output itself (the root is not output 0).
  x.zero_grad();
  TwoOutputs second = doubled_and_tripled(x);
  second.out[1].backward(Tensor::from_vector({1, 10}, {2}, DType::kF64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{3, 30}));
  EXPECT_EQ(*second.seen, (std::vector<std::vector<bool>>{{false, true}}));
}

TEST(Autograd, BackwardOfANonScalarNeedsAGradient) {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = scale(x, 2);
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::from_vector({1, 10}, {2}, DType::kF64));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<double>{2, 20}));
}

}  // namespace
}  // namespace dtrn
