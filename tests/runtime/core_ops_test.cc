// Elementwise, reduction, matmul and indexing ops: forward against plain loops, backward against central
// finite differences in f64 (gradcheck.h), odd sizes included.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "gradcheck.h"

namespace dtrn {
namespace {

using testing::expect_gradients_match;
using testing::random_input;
using ::testing::HasSubstr;

// Plain reference: C[b] = op(A[b]) op(B[b]) with explicit loops over row-major data.
std::vector<double> reference_matmul(const std::vector<double>& a, const std::vector<double>& b,
                                     int64_t batch, int64_t m, int64_t n, int64_t k, bool ta, bool tb,
                                     bool shared_b) {
  std::vector<double> c(batch * m * n, 0.0);
  for (int64_t z = 0; z < batch; ++z) {
    const double* A = a.data() + z * m * k;
    const double* B = b.data() + (shared_b ? 0 : z * k * n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += (ta ? A[p * m + i] : A[i * k + p]) * (tb ? B[j * k + p] : B[p * n + j]);
        c[z * m * n + i * n + j] = s;
      }
  }
  return c;
}

TEST(Matmul, ForwardMatchesLoopsForEveryTransposeAndBatchLayout) {
  const int64_t m = 5, n = 3, k = 7;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool shared : {false, true}) {
        Tensor a = random_input(ta ? Shape{2, k, m} : Shape{2, m, k}, 1);
        Tensor b = random_input(shared ? (tb ? Shape{n, k} : Shape{k, n}) : (tb ? Shape{2, n, k} : Shape{2, k, n}), 2);
        Tensor c = matmul(a, b, ta, tb);
        ASSERT_EQ(c.shape(), (Shape{2, m, n}));
        std::vector<double> ref = reference_matmul(a.to_vector(), b.to_vector(), 2, m, n, k, ta, tb, shared);
        std::vector<double> got = c.to_vector();
        for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(got[i], ref[i], 1e-12) << ta << tb << shared;
      }
}

TEST(Matmul, GradientsForEveryLayout) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor a = random_input(ta ? Shape{3, 4, 5} : Shape{3, 5, 4}, 3);
      Tensor b = random_input(tb ? Shape{3, 2, 4} : Shape{3, 4, 2}, 4);
      expect_gradients_match([=](const std::vector<Tensor>& x) { return matmul(x[0], x[1], ta, tb); }, {a, b});
    }
  for (bool tb : {false, true}) {  // shared 2-D right-hand side: its gradient sums over the batch
    Tensor a = random_input({2, 3, 5}, 5);
    Tensor b = random_input(tb ? Shape{4, 5} : Shape{5, 4}, 6);
    expect_gradients_match([=](const std::vector<Tensor>& x) { return matmul(x[0], x[1], false, tb); }, {a, b});
  }
}

TEST(Matmul, MismatchNamesTheOpAndBothShapes) {
  try {
    matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
    EXPECT_THAT(e.what(), HasSubstr("[2, 3]"));
    EXPECT_THAT(e.what(), HasSubstr("[4, 5]"));
  }
}

TEST(Linear, EqualsMatmulWithTransposedWeightPlusBiasAndHasGradients) {
  Tensor x = random_input({2, 3, 5}, 7), w = random_input({4, 5}, 8), b = random_input({4}, 9);
  Tensor y = linear(x, w, b);
  Tensor ref = add(matmul(x, w.transpose(0, 1).contiguous()), b);
  EXPECT_LT(testing::relative_error(y, ref), 1e-14);
  expect_gradients_match([](const std::vector<Tensor>& t) { return linear(t[0], t[1], t[2]); }, {x, w, b});
}

TEST(Linear, SiluLinearEqualsLinearOfSiluAndHasGradients) {
  Tensor x = random_input({2, 3, 5}, 17, -4, 4), w = random_input({4, 5}, 18), b = random_input({4}, 19);
  EXPECT_LT(testing::relative_error(silu_linear(x, w, b), linear(silu(x), w, b)), 1e-15);
  // The backward recomputes silu(x): finite differences check every input's gradient, with and
  // without the bias.
  expect_gradients_match([](const std::vector<Tensor>& t) { return silu_linear(t[0], t[1], t[2]); },
                         {x, w, b});
  expect_gradients_match([](const std::vector<Tensor>& t) { return silu_linear(t[0], t[1]); }, {x, w});
}

TEST(Linear, SwigluLinearEqualsLinearOfSwigluAndHasGradients) {
  Tensor gate = random_input({2, 3, 5}, 27, -4, 4), up = random_input({2, 3, 5}, 28),
         w = random_input({4, 5}, 29);
  EXPECT_LT(testing::relative_error(swiglu_linear(gate, up, w), linear(swiglu(gate, up), w)), 1e-15);
  expect_gradients_match([](const std::vector<Tensor>& t) { return swiglu_linear(t[0], t[1], t[2]); },
                         {gate, up, w});
  EXPECT_THROW(swiglu_linear(gate, Tensor::zeros({2, 3, 4}, DType::kF64), w), Error);
  // With a residual added inside the product: the sum, and the residual's gradient is the output's.
  Tensor residual = random_input({2, 3, 4}, 30);
  EXPECT_LT(testing::relative_error(swiglu_linear(gate, up, w, residual), add(linear(swiglu(gate, up), w), residual)),
            1e-15);
  expect_gradients_match([](const std::vector<Tensor>& t) { return swiglu_linear(t[0], t[1], t[2], t[3]); },
                         {gate, up, w, residual});
  EXPECT_THAT([&] { swiglu_linear(gate, up, w, random_input({2, 3, 5}, 31)); },
              testing::throws_error_naming("matmul: residual", "[2, 3, 4]"));
}

TEST(Elementwise, BroadcastingForwardAndGradients) {
  Tensor a = random_input({3, 1, 5}, 10), b = random_input({4, 1}, 11);
  Tensor c = add(a, b);
  ASSERT_EQ(c.shape(), (Shape{3, 4, 5}));
  std::vector<double> va = a.to_vector(), vb = b.to_vector(), vc = c.to_vector();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 5; ++k) ASSERT_DOUBLE_EQ(vc[(i * 4 + j) * 5 + k], va[i * 5 + k] + vb[j]);
  expect_gradients_match([](const std::vector<Tensor>& t) { return add(t[0], t[1]); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& t) { return sub(t[0], t[1]); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& t) { return mul(t[0], t[1]); }, {a, b});
  EXPECT_THROW(add(Tensor::zeros({3}), Tensor::zeros({4})), Error);
}

TEST(Elementwise, UnaryForwardAndGradients) {
  Tensor x = random_input({3, 7}, 12, -4, 4), y = random_input({3, 7}, 13);
  std::vector<double> vx = x.to_vector(), vy = y.to_vector();
  std::vector<double> s = silu(x).to_vector(), g = swiglu(x, y).to_vector();
  for (size_t i = 0; i < vx.size(); ++i) {
    const double ref = vx[i] / (1 + std::exp(-vx[i]));
    EXPECT_NEAR(s[i], ref, 1e-15);
    EXPECT_NEAR(g[i], ref * vy[i], 1e-15);
  }
  expect_gradients_match([](const std::vector<Tensor>& t) { return silu(t[0]); }, {x});
  expect_gradients_match([](const std::vector<Tensor>& t) { return swiglu(t[0], t[1]); }, {x, y});
  expect_gradients_match([](const std::vector<Tensor>& t) { return scale(t[0], -2.5); }, {x});
  expect_gradients_match([](const std::vector<Tensor>& t) { return add_scalar(t[0], 3.0); }, {x});
}

TEST(Reduce, SumsAndMeansMatchLoopsAndHaveGradients) {
  Tensor x = random_input({3, 4, 5}, 14);
  std::vector<double> v = x.to_vector();
  std::vector<double> s1 = sum(x, 1).to_vector();
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 5; ++k) {
      double ref = 0;
      for (int j = 0; j < 4; ++j) ref += v[(i * 4 + j) * 5 + k];
      EXPECT_NEAR(s1[i * 5 + k], ref, 1e-14);
    }
  double total = 0;
  for (double e : v) total += e;
  EXPECT_NEAR(sum(x).item(), total, 1e-13);
  EXPECT_NEAR(mean(x).item(), total / 60, 1e-14);
  EXPECT_EQ(sum(x, -1, true).shape(), (Shape{3, 4, 1}));
  expect_gradients_match([](const std::vector<Tensor>& t) { return sum(t[0], 1); }, {x});
  expect_gradients_match([](const std::vector<Tensor>& t) { return mean(t[0], 2, true); }, {x});
  expect_gradients_match([](const std::vector<Tensor>& t) { return mean(t[0]); }, {x});
  expect_gradients_match([](const std::vector<Tensor>& t) { return sum_to_shape(t[0], {4, 1}); }, {x});
}

TEST(Index, SelectAndAddMatchLoopsWithRepeatedIndices) {
  Tensor x = random_input({2, 5, 3}, 15);
  Tensor idx = Tensor::from_ints({4, 0, 4, 2}, {4});
  Tensor sel = index_select(x, 1, idx);
  ASSERT_EQ(sel.shape(), (Shape{2, 4, 3}));
  std::vector<double> vx = x.to_vector(), vs = sel.to_vector();
  const int64_t ids[] = {4, 0, 4, 2};
  for (int o = 0; o < 2; ++o)
    for (int j = 0; j < 4; ++j)
      for (int c = 0; c < 3; ++c) ASSERT_EQ(vs[(o * 4 + j) * 3 + c], vx[(o * 5 + ids[j]) * 3 + c]);
  Tensor src = random_input({2, 4, 3}, 16);
  std::vector<double> added = index_add(x, 1, idx, src).to_vector(), ref = vx, vsrc = src.to_vector();
  for (int o = 0; o < 2; ++o)
    for (int j = 0; j < 4; ++j)
      for (int c = 0; c < 3; ++c) ref[(o * 5 + ids[j]) * 3 + c] += vsrc[(o * 4 + j) * 3 + c];
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(added[i], ref[i], 1e-15);
  expect_gradients_match([=](const std::vector<Tensor>& t) { return index_select(t[0], 1, idx); }, {x});
  expect_gradients_match([=](const std::vector<Tensor>& t) { return index_add(t[0], 1, idx, t[1]); }, {x, src});
  EXPECT_THROW(index_select(x, 1, Tensor::from_ints({5}, {1})), Error);
}

TEST(Index, EmbeddingGathersRowsAndScatterAddsGradients) {
  Tensor w = random_input({6, 4}, 17);
  Tensor ids = Tensor::from_ints({1, 5, 1, 0, 3, 1}, {2, 3}, DType::kI32);
  Tensor e = embedding(w, ids);
  ASSERT_EQ(e.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(e.narrow(0, 0, 1).narrow(1, 1, 1).to_vector(), w.narrow(0, 5, 1).to_vector());  // ids[0][1] = 5
  expect_gradients_match([=](const std::vector<Tensor>& t) { return embedding(t[0], ids); }, {w});
}

TEST(Index, ConcatSplitAndViewsHaveGradients) {
  Tensor a = random_input({2, 3}, 18), b = random_input({2, 5}, 19);
  Tensor c = concat({a, b}, 1);
  ASSERT_EQ(c.shape(), (Shape{2, 8}));
  EXPECT_EQ(c.narrow(1, 3, 5).contiguous().to_vector(), b.to_vector());
  std::vector<Tensor> parts = split(c, {4, 4}, 1);
  EXPECT_EQ(parts[1].contiguous().to_vector(), c.narrow(1, 4, 4).contiguous().to_vector());
  expect_gradients_match([](const std::vector<Tensor>& t) { return concat({t[0], t[1]}, 1); }, {a, b});
  expect_gradients_match([](const std::vector<Tensor>& t) { return mul(split(t[0], {1, 2}, 1)[1], split(t[0], {1, 2}, 1)[1]); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& t) { return t[0].transpose(0, 1).reshape({6}); }, {a});
  expect_gradients_match([](const std::vector<Tensor>& t) { return t[0].to(DType::kF32).to(DType::kF64); },
                         {a}, {1e-3, 1e-3, 1e-3});
  EXPECT_THROW(concat({a, random_input({3, 3}, 20)}, 1), Error);
}

}  // namespace
}  // namespace dtrn
