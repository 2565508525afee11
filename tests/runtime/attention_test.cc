// attention() and causal_attention(): the forward against a dense masked softmax per sequence
// written with plain loops, the backward against central finite differences in f64 (gradcheck.h),
// causality and sequence isolation, the dense form against the packed one, f32 against f64, and
// argument errors. The packed batch mixes a one-row sequence, an empty one and longer ones; head
// layouts cover G = 1 (all query heads share one KV head), G = H (no sharing) and a mixed grouping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.h"

namespace dtrn {
namespace {

using testing::expect_gradients_match;
using testing::random_input;
using testing::relative_error;
using testing::throws_error_naming;

// Sequences of lengths 1, 4, 0 and 5 packed into N = 10 rows.
const std::vector<int64_t> kOffsets = {0, 1, 5, 5, 10};
constexpr int64_t kRows = 10, kDim = 6;

struct HeadLayout {
  int64_t h, g;
};
const HeadLayout kLayouts[] = {{3, 1}, {3, 3}, {4, 2}};

Tensor offsets_tensor(const std::vector<int64_t>& cu) {
  return Tensor::from_ints(cu, {static_cast<int64_t>(cu.size())}, DType::kI32);
}

// Per sequence and query head: the dense [L, L] score matrix scale * Q K^T, -inf above the
// diagonal, a row softmax (max subtracted), then P V. Host copies and plain loops only.
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const std::vector<int64_t>& cu) {
  const int64_t h = q.size(1), d = q.size(2), g = k.size(1);
  const std::vector<double> Q = q.to_vector(), K = k.to_vector(), V = v.to_vector();
  std::vector<double> out(Q.size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (size_t s = 0; s + 1 < cu.size(); ++s) {
    const int64_t start = cu[s], len = cu[s + 1] - cu[s];
    for (int64_t head = 0; head < h; ++head) {
      const int64_t kv = head / (h / g);
      std::vector<double> scores(len * len, -std::numeric_limits<double>::infinity());
      for (int64_t i = 0; i < len; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) {
            dot += Q[((start + i) * h + head) * d + c] * K[((start + j) * g + kv) * d + c];
          }
          scores[i * len + j] = scale * dot;
        }
      }
      for (int64_t i = 0; i < len; ++i) {
        const double m =
            *std::max_element(scores.begin() + i * len, scores.begin() + (i + 1) * len);
        double z = 0;
        for (int64_t j = 0; j < len; ++j) z += std::exp(scores[i * len + j] - m);
        for (int64_t j = 0; j < len; ++j) {
          const double p = std::exp(scores[i * len + j] - m) / z;
          for (int64_t c = 0; c < d; ++c) {
            out[((start + i) * h + head) * d + c] += p * V[((start + j) * g + kv) * d + c];
          }
        }
      }
    }
  }
  return out;
}

// f64 errors come from reordered rounding only: ~1e-15 on outputs of size ~1, so 1e-12 is a tight
// bound.
TEST(Attention, ForwardMatchesDenseMaskedSoftmaxPerSequence) {
  for (const HeadLayout& l : kLayouts) {
    Tensor q = random_input({kRows, l.h, kDim}, 1, -2, 2);
    Tensor k = random_input({kRows, l.g, kDim}, 2, -2, 2);
    Tensor v = random_input({kRows, l.g, kDim}, 3);
    Tensor out = attention(q, k, v, offsets_tensor(kOffsets));
    ASSERT_EQ(out.shape(), q.shape());
    const std::vector<double> got = out.to_vector();
    const std::vector<double> want = reference_attention(q, k, v, kOffsets);
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-12) << "H " << l.h << " G " << l.g << " element " << i;
    }
  }
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  for (const HeadLayout& l : kLayouts) {
    SCOPED_TRACE(::testing::Message() << "H " << l.h << " G " << l.g);
    expect_gradients_match(
        [](const std::vector<Tensor>& x) { return attention(x[0], x[1], x[2], x[3]); },
        {random_input({kRows, l.h, kDim}, 4), random_input({kRows, l.g, kDim}, 5),
         random_input({kRows, l.g, kDim}, 6), offsets_tensor(kOffsets)});
  }
}

// Perturbing key/value row j of a sequence leaves every output row before j in that sequence, and
// every row of the other sequences, bit-identical (those rows never read row j), and changes row j
// itself.
TEST(Attention, RowsSeeOnlyEarlierRowsOfTheirOwnSequence) {
  for (const HeadLayout& l : {kLayouts[0], kLayouts[1]}) {
    Tensor q = random_input({kRows, l.h, kDim}, 7);
    Tensor k = random_input({kRows, l.g, kDim}, 8);
    Tensor v = random_input({kRows, l.g, kDim}, 9);
    const Tensor cu = offsets_tensor(kOffsets);
    const std::vector<double> base = attention(q, k, v, cu).to_vector();
    const int64_t row_size = l.h * kDim;
    for (size_t s = 0; s + 1 < kOffsets.size(); ++s) {
      for (int64_t j = kOffsets[s]; j < kOffsets[s + 1]; ++j) {
        std::vector<double> kp = k.to_vector(), vp = v.to_vector();
        for (int64_t e = j * l.g * kDim; e < (j + 1) * l.g * kDim; ++e) {
          kp[e] += 0.5;
          vp[e] -= 0.5;
        }
        const std::vector<double> moved =
            attention(q, Tensor::from_vector(kp, k.shape(), DType::kF64),
                      Tensor::from_vector(vp, v.shape(), DType::kF64), cu)
                .to_vector();
        for (int64_t r = 0; r < kRows; ++r) {
          const bool may_change = r >= j && r < kOffsets[s + 1];
          double diff = 0;
          for (int64_t e = r * row_size; e < (r + 1) * row_size; ++e) {
            diff = std::max(diff, std::abs(moved[e] - base[e]));
          }
          if (!may_change) {
            EXPECT_EQ(diff, 0.0) << "perturbing row " << j << " changed row " << r;
          } else if (r == j) {
            EXPECT_GT(diff, 1e-6) << "row " << r << " ignores its own key/value";
          }
        }
      }
    }
  }
}

// The [B, T] form against the dense masked softmax of each row (the independent reference above), so a
// wrong reshape or offset in the wrapper shows.
TEST(CausalAttention, MatchesTheDenseMaskedSoftmaxOfEachRow) {
  const int64_t b = 3, t = 4, h = 4, g = 2;
  Tensor q = random_input({b, t, h, kDim}, 10);
  Tensor k = random_input({b, t, g, kDim}, 11);
  Tensor v = random_input({b, t, g, kDim}, 12);
  Tensor dense = causal_attention(q, k, v);
  ASSERT_EQ(dense.shape(), q.shape());
  const std::vector<double> want =
      reference_attention(q.reshape({b * t, h, kDim}), k.reshape({b * t, g, kDim}), v.reshape({b * t, g, kDim}),
                          {0, t, 2 * t, 3 * t});
  const std::vector<double> got = dense.to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
}

TEST(CausalAttention, GradientsMatchFiniteDifferences) {
  expect_gradients_match(
      [](const std::vector<Tensor>& x) { return causal_attention(x[0], x[1], x[2]); },
      {random_input({2, 3, 2, 4}, 13), random_input({2, 3, 1, 4}, 14),
       random_input({2, 3, 1, 4}, 15)});
}

// Output and gradients of attention on `dtype` copies of fixed f64 inputs, as f64 host tensors.
std::vector<Tensor> attention_with_gradients(DType dtype, const HeadLayout& l) {
  Tensor q = random_input({kRows, l.h, kDim}, 16).to(dtype).set_requires_grad(true);
  Tensor k = random_input({kRows, l.g, kDim}, 17).to(dtype).set_requires_grad(true);
  Tensor v = random_input({kRows, l.g, kDim}, 18).to(dtype).set_requires_grad(true);
  Tensor out = attention(q, k, v, offsets_tensor(kOffsets));
  sum(mul(out, random_input(out.shape(), 19).to(dtype))).backward();
  return {out, q.grad(), k.grad(), v.grad()};
}

// f32 rounds inputs and outputs (relative 6e-8) and accumulates in double, so the two precisions
// agree to about 1e-7; 1e-5 leaves two orders of margin yet catches any f32-only bug.
TEST(Attention, F32AgreesWithF64) {
  for (const HeadLayout& l : kLayouts) {
    const std::vector<Tensor> f64 = attention_with_gradients(DType::kF64, l);
    const std::vector<Tensor> f32 = attention_with_gradients(DType::kF32, l);
    ASSERT_EQ(f32[0].dtype(), DType::kF32);
    for (size_t i = 0; i < f64.size(); ++i) {
      EXPECT_LT(relative_error(f32[i], f64[i]), 1e-5) << "tensor " << i << " H " << l.h;
    }
  }
}

// The same attention composed from other differentiable ops, so its gradients come from autograd
// through matmul, softmax and index_select rather than from the attention kernels: KV heads
// expanded to the H query heads, scores [H, N, N] plus a block-diagonal causal mask (-inf outside
// "same sequence, j <= i"), a row softmax, then P V.
Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                          const std::vector<int64_t>& cu) {
  const int64_t n = q.size(0), h = q.size(1), d = q.size(2), group = h / k.size(1);
  std::vector<int64_t> kv_of_head(h);
  for (int64_t head = 0; head < h; ++head) kv_of_head[head] = head / group;
  const Tensor expand = Tensor::from_ints(kv_of_head, {h});
  std::vector<double> mask(n * n, -std::numeric_limits<double>::infinity());
  for (size_t s = 0; s + 1 < cu.size(); ++s) {
    for (int64_t i = cu[s]; i < cu[s + 1]; ++i) {
      for (int64_t j = cu[s]; j <= i; ++j) mask[i * n + j] = 0;
    }
  }
  Tensor qh = q.transpose(0, 1);                           // [H, N, D]
  Tensor kh = index_select(k, 1, expand).transpose(0, 1);  // [H, N, D]
  Tensor vh = index_select(v, 1, expand).transpose(0, 1);  // [H, N, D]
  Tensor scores = scale(matmul(qh, kh, false, true), 1.0 / std::sqrt(static_cast<double>(d)));
  Tensor p = softmax(add(scores, Tensor::from_vector(mask, {n, n}, q.dtype())));
  return matmul(p, vh).transpose(0, 1);  // [N, H, D]
}

// Sizes above the kernels' parallel threshold, so the OpenMP split (per (sequence, head) forward,
// per (sequence, KV head) backward) is what runs. f64 throughout; both paths are accurate to
// ~1e-14.
TEST(Attention, ParallelPathMatchesComposedReference) {
  const std::vector<int64_t> cu = {0, 70, 71, 71, 200, 256};
  const int64_t n = 256, h = 4, g = 2, d = 16;
  std::vector<Tensor> leaves = {random_input({n, h, d}, 20, -2, 2),
                                random_input({n, g, d}, 21, -2, 2), random_input({n, g, d}, 22)};
  Tensor weights = random_input({n, h, d}, 23);
  std::vector<std::vector<Tensor>> results;
  for (bool fused : {true, false}) {
    std::vector<Tensor> in;
    for (const Tensor& t : leaves) in.push_back(t.detach().clone().set_requires_grad(true));
    Tensor out = fused ? attention(in[0], in[1], in[2], offsets_tensor(cu))
                       : composed_attention(in[0], in[1], in[2], cu);
    sum(mul(out, weights)).backward();
    results.push_back({out, in[0].grad(), in[1].grad(), in[2].grad()});
  }
  for (size_t i = 0; i < results[0].size(); ++i) {
    EXPECT_LT(relative_error(results[0][i], results[1][i]), 1e-10) << "tensor " << i;
  }
}

TEST(Attention, ErrorsNameTheOpAndShapes) {
  const Tensor cu = offsets_tensor({0, 4});
  EXPECT_THAT(
      [&] {
        attention(random_input({4, 3, 6}, 1), random_input({4, 2, 6}, 2),
                  random_input({4, 2, 6}, 3), cu);
      },
      throws_error_naming("attention", "[4, 3, 6]", "[4, 2, 6]"));
  EXPECT_THAT(
      [&] {
        attention(random_input({4, 2, 6}, 1), random_input({4, 1, 4}, 2),
                  random_input({4, 1, 4}, 3), cu);
      },
      throws_error_naming("attention", "[4, 2, 6]", "[4, 1, 4]"));
  EXPECT_THAT(
      [&] {
        attention(random_input({4, 2, 6}, 1), random_input({4, 1, 6}, 2),
                  random_input({3, 1, 6}, 3), cu);
      },
      throws_error_naming("attention", "[4, 1, 6]", "[3, 1, 6]"));
  const Tensor q = random_input({4, 2, 6}, 1), kv = random_input({4, 1, 6}, 2);
  EXPECT_THAT(
      [&] {
        attention(q, kv, kv, offsets_tensor({0, 3}));
      },
      throws_error_naming("cu_seqlens", "[4, 2, 6]"));
  EXPECT_THAT(
      [&] {
        attention(q, kv, kv, offsets_tensor({0, 3, 2, 4}));
      },
      throws_error_naming("cu_seqlens decreases"));
  EXPECT_THAT(
      [&] {
        attention(q, kv, kv, Tensor::from_ints({0, 4}, {2}, DType::kI64));
      },
      throws_error_naming("i32"));
  EXPECT_THAT(
      [&] {
        causal_attention(random_input({2, 3, 2, 4}, 1), random_input({2, 4, 1, 4}, 2),
                         random_input({2, 4, 1, 4}, 3));
      },
      throws_error_naming("causal_attention", "[2, 3, 2, 4]", "[2, 4, 1, 4]"));
}

}  // namespace
}  // namespace dtrn
