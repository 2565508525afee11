// linears() in bf16 on the GPU against separate linear() calls in f64 on the CPU, on the same
// bf16-rounded inputs. The GPU sums x's gradient inside its products: the first writes g_0 W_0 rounded to
// bf16, each next one reads that bf16 running sum, adds its product in f32 and rounds once (GemmArgs beta
// = 1 with a bf16 C, through cuBLASLt and through the skinny kernels). Shapes below take both paths.
// The weights are bf16 leaves, so their gradients go straight into f32 buffers (matmul.cc).
//
// Tolerances, per element, from the exact f64 values (no cancellation-prone relative error):
//   y_i:  2^-8 |y_i| (one bf16 rounding, 2^-9, doubled) + 1e-4 sum_k |x||W_i| (f32 accumulation of
//         K <= 300 exact bf16 products: K 2^-24 < 2e-5);
//   dx:   the bound of the unfused composition (each product g_j W_j rounded to bf16, then each
//         running sum p_j = sum_{i<=j} g_i W_i rounded by the add): 2^-8 (sum_j |p_j| + sum_{j>0}
//         |g_j W_j|), plus 1e-4 sum_i |g_i||W_i| (f32 accumulation). One rounding of each running
//         sum alone (the beta = 1 epilogue in f32) was the first bound; on an H200 (2026-11-29) 5 of
//         the 28800 elements of the first case below exceeded it by up to 16%, as if cuBLASLt rounded
//         the product before adding C. linears must be no less accurate than the ops it replaces;
//   dW_i: 1e-4 sum_n |g_i||x| (f32 buffer, N <= 300 exact products).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::expect_within;
using gpu_testing::kGpu;
using gpu_testing::random_cpu;

Tensor abs_of(const Tensor& t) {
  std::vector<double> v = t.to_vector();
  for (double& e : v) e = std::fabs(e);
  return Tensor::from_vector(v, t.shape(), DType::kF64);
}

std::vector<double> tolerance(const std::vector<double>& rel_terms, const std::vector<double>& bound) {
  std::vector<double> tol(bound.size());
  for (size_t i = 0; i < tol.size(); ++i) tol[i] = rel_terms[i] / 256 + 1e-4 * bound[i] + 1e-30;
  return tol;
}

void expect_bf16_linears_match_cpu(const Shape& x_shape, const std::vector<int64_t>& outs,
                                   const std::vector<bool>& used) {
  const int64_t in = x_shape.back();
  const Tensor x = random_cpu(x_shape, 1, DType::kBF16);
  std::vector<Tensor> ws, rs;
  for (size_t i = 0; i < outs.size(); ++i) {
    ws.push_back(random_cpu({outs[i], in}, 10 + i, DType::kBF16));
    Shape y_shape = x_shape;
    y_shape.back() = outs[i];
    rs.push_back(random_cpu(y_shape, 20 + i, DType::kBF16));  // the outputs' upstream gradients
  }
  std::string what = shape_str(x_shape) + " into";
  for (int64_t o : outs) what += " " + std::to_string(o);

  // GPU: bf16 leaves. sum(y_i * r_i) in f32 sends y_i the gradient r_i, exact in bf16.
  Tensor xg = x.to(kGpu).set_requires_grad(true);
  std::vector<Tensor> wg;
  for (const Tensor& w : ws) wg.push_back(w.to(kGpu).set_requires_grad(true));
  const std::vector<Tensor> ys = linears(xg, wg);
  Tensor loss;
  for (size_t i = 0; i < ys.size(); ++i) {
    if (!used[i]) continue;
    const Tensor term = sum(mul(ys[i].to(DType::kF32), rs[i].to(DType::kF32).to(kGpu)));
    loss = loss.defined() ? add(loss, term) : term;
  }
  loss.backward();

  // CPU f64: separate linears on the same values; gradients written out, with their bounds.
  const Tensor x64 = x.to(DType::kF64);
  Tensor dx = Tensor::zeros(x_shape, DType::kF64), dx_bound = dx, running_sums = dx;
  bool any_used = false;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor w64 = ws[i].to(DType::kF64), r64 = rs[i].to(DType::kF64);
    ASSERT_EQ(ys[i].dtype(), DType::kBF16) << what;
    const Tensor y = linear(x64, w64);
    expect_within(ys[i].to_vector(), y.to_vector(),
                  tolerance(abs_of(y).to_vector(), linear(abs_of(x64), abs_of(w64)).to_vector()),
                  what + ": output " + std::to_string(i));
    if (!used[i]) {
      EXPECT_FALSE(wg[i].grad().defined()) << what << ": weight " << i << " has no used output";
      continue;
    }
    const Tensor product = matmul(r64, w64);
    if (any_used) running_sums = add(running_sums, abs_of(product));  // rounded before the add
    any_used = true;
    dx = add(dx, product);
    dx_bound = add(dx_bound, matmul(abs_of(r64), abs_of(w64)));
    running_sums = add(running_sums, abs_of(dx));
    const Tensor r2 = r64.reshape({-1, outs[i]}), x2 = x64.reshape({-1, in});
    ASSERT_EQ(wg[i].grad().dtype(), DType::kF32) << what;
    expect_within(wg[i].grad().to_vector(), matmul(r2, x2, true, false).to_vector(),
                  tolerance(std::vector<double>(r2.size(1) * in, 0.0),
                            matmul(abs_of(r2), abs_of(x2), true, false).to_vector()),
                  what + ": weight gradient " + std::to_string(i));
  }
  // A bf16 leaf's gradient is kept in f32 (autograd.cc): the bf16 sum of the products, widened exactly.
  ASSERT_EQ(xg.grad().dtype(), DType::kF32) << what;
  expect_within(xg.grad().to_vector(), dx.to_vector(),
                tolerance(running_sums.to_vector(), dx_bound.to_vector()), what + ": input gradient");
}

TEST(CudaLinears, Bf16MatchesTheCpuThroughCublasLtAndSkinnyProducts) {
  REQUIRE_GPU();
  // dx's products have K = out_i: above the skinny limit (8) they run on cuBLASLt, at or below it on the
  // skinny kernels, so these cover beta = 1 into bf16 on both, and mixtures.
  expect_bf16_linears_match_cpu({300, 96}, {64, 32, 32}, {true, true, true});
  expect_bf16_linears_match_cpu({37, 40}, {5, 3, 11}, {true, false, true});
  expect_bf16_linears_match_cpu({37, 40}, {2, 6}, {true, true});
  expect_bf16_linears_match_cpu({2, 9, 40}, {17, 17}, {true, true});
  expect_bf16_linears_match_cpu({0, 40}, {17, 17}, {true, true});
}

}  // namespace
}  // namespace dtrn
