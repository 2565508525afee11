// The CUDA RMSNorm backward kernels (rmsnorm_backward and add_rmsnorm_backward, rmsnorm.cu) called
// directly against the CPU backend's: dx and dw from the same inputs and the same rstd, outputs
// filled with NaN first so that every element must be written. Shapes pick the kernel's cases:
// row counts 1, 7, 65 (nine blocks of 8 rows, the last of one), 1000, 4097 (171 blocks of 24, the
// last of 17), 16384 (the 360m step: 256 blocks of 64) and 16385 (228 blocks of 72, the last of
// 41); widths 960 (the 360m rows: 16-byte chunks, 4 a lane in bf16, 8 in f32), 33 (one element
// per access), 2048 (the widest row a bf16 lane holds) and 257 / 2056 (too wide: the two-pass
// kernels). Then run-to-run bit identity of dx and dw. Every test skips without a GPU.
//
// Tolerances, as kExactish in cuda_nn_test.cc: both backends evaluate the CPU's double expressions
// on identical values and round once, so f32 results differ by double-level summation order only:
// 2 ulp relative plus 1e-10 absolute for results near zero (double noise of the terms, ~1e-15 of
// them, shows there). A column sum of 16385 terms of magnitude <= 1 carries ~2e-12 of double noise,
// still under 1e-10. f64: 1e-12. bf16 inputs are exact in f32, the CPU's stand-in; the GPU rounds
// its result once more, to bf16 (2^-9 relative): widen_for adds 2^-8. add_rmsnorm_backward's dx
// rounds the norm's dx to the dtype before adding dh, and that rounding is of a value the two
// backends know only to double precision (its dot is summed in different orders), so it may fall
// on either side of a rounding boundary: one rounding step of |norm dx| <= |dx| + |dh|, not of
// |dx|, on top of the sum's own: the relative tolerance applies to |dx| + |dh| once more.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../../runtime/src/backend.h"
#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using gpu_testing::expect_close;
using gpu_testing::expect_within;
using gpu_testing::kGpu;
using gpu_testing::random_cpu;
using gpu_testing::reference_dtype;
using gpu_testing::Tol;
using gpu_testing::widen_for;

using gpu_testing::kExactish;
using gpu_testing::kF64;

// One backward problem: the CPU's inputs (values rounded to `dtype`, held in its reference dtype)
// and rstd from the CPU's forward of x.
struct NormProblem {
  DType dtype;
  Tensor x, w, rstd, dy, dh;
};

NormProblem make_problem(int64_t rows, int64_t cols, DType dtype, uint64_t seed) {
  const DType ref = reference_dtype(dtype);
  auto rounded = [&](const Tensor& t) { return t.to(dtype).to(ref); };
  NormProblem p{dtype,
                rounded(random_cpu({rows, cols}, seed, DType::kF64)),
                rounded(random_cpu({cols}, seed + 1, DType::kF64, 0.5, 1.5)),
                Tensor::zeros({rows}, ref),
                rounded(random_cpu({rows, cols}, seed + 2, DType::kF64)),
                rounded(random_cpu({rows, cols}, seed + 3, DType::kF64))};
  backend_for(Device::cpu()).rmsnorm(p.x, p.w, 1e-5, Tensor::zeros({rows, cols}, ref), p.rstd);
  return p;
}

struct Gradients {
  Tensor dx, dw;
};

// The kernel on `device` (the GPU's inputs in the problem's dtype, rstd in the statistics dtype:
// f32 for bf16), residual selecting add_rmsnorm_backward. GPU outputs start as NaN.
Gradients run_backward(const NormProblem& p, bool residual, Device device) {
  const bool gpu = device != Device::cpu();
  const DType data = gpu ? p.dtype : p.x.dtype();
  auto in = [&](const Tensor& t) { return gpu ? t.to(data).to(device) : t; };
  const Tensor rstd = p.rstd.to(device);
  const double fill = gpu ? std::numeric_limits<double>::quiet_NaN() : 0.0;
  Gradients out{Tensor::full(p.x.shape(), fill, data, device),
                Tensor::full(p.w.shape(), fill, data, device)};
  Backend& b = backend_for(device);
  if (residual) {
    b.add_rmsnorm_backward(in(p.x), in(p.w), rstd, in(p.dy), in(p.dh), out.dx, out.dw);
  } else {
    b.rmsnorm_backward(in(p.x), in(p.w), rstd, in(p.dy), out.dx, out.dw);
  }
  return out;
}

void expect_backward_matches_cpu(int64_t rows, int64_t cols, DType dtype, bool residual) {
  const NormProblem p = make_problem(rows, cols, dtype, 500 + rows + cols);
  const Gradients want = run_backward(p, residual, Device::cpu());
  const Gradients got = run_backward(p, residual, kGpu);
  const std::string what = std::string(residual ? "add_rmsnorm_backward [" : "rmsnorm_backward [") +
                           std::to_string(rows) + ", " + std::to_string(cols) + "] (" +
                           std::string(dtype_name(dtype)) + ")";
  const Tol tol = widen_for(dtype, dtype == DType::kF64 ? kF64 : kExactish);
  if (residual) {
    const std::vector<double> w = want.dx.to_vector(), dh = p.dh.to_vector();
    std::vector<double> bound(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      bound[i] =
          tol.abs + tol.rel * std::fabs(w[i]) + tol.rel * (std::fabs(w[i]) + std::fabs(dh[i]));
    }
    expect_within(got.dx.to_vector(), w, bound, what + " dx");
  } else {
    expect_close(got.dx, want.dx, tol, what + " dx");
  }
  expect_close(got.dw, want.dw, tol, what + " dw");
}

TEST(CudaRmsNormBackward, MatchesTheCpuAcrossRowCountsAndWidths) {
  REQUIRE_GPU();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 960},     {7, 960},     {65, 960},    {1000, 960}, {4097, 960},
      {16384, 960}, {16385, 960}, {1, 33},      {7, 33},     {1000, 33},
      {16385, 33},  {1000, 257},  {1000, 2048}, {7, 2056},   {1000, 2056}};
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (const auto& [rows, cols] : shapes) {
      for (bool residual : {false, true}) expect_backward_matches_cpu(rows, cols, dtype, residual);
    }
  }
  // f64 takes 16-byte chunks of two elements: 960 is too wide for a lane (480 chunks), 256 is not.
  for (const auto& [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{1000, 256}, {1000, 960}}) {
    for (bool residual : {false, true})
      expect_backward_matches_cpu(rows, cols, DType::kF64, residual);
  }
}

// Rows one element past a 16-byte boundary: the kernels read them one element at a time, fused
// while a lane's 8 registers cover the row (200 elements), two-pass beyond (960).
TEST(CudaRmsNormBackward, MisalignedRowsMatchTheCpu) {
  REQUIRE_GPU();
  for (int64_t cols : {200, 960}) {
    const NormProblem p = make_problem(300, cols, DType::kF32, 600 + cols);
    const Gradients want = run_backward(p, /*residual=*/false, Device::cpu());
    const Tensor padded = concat({Tensor::zeros({1}), p.dy.reshape({-1})}, 0).to(kGpu);
    const Tensor dy = padded.narrow(0, 1, 300 * cols).reshape({300, cols});
    Tensor dx =
        Tensor::full({300, cols}, std::numeric_limits<double>::quiet_NaN(), DType::kF32, kGpu);
    Tensor dw = Tensor::full({cols}, std::numeric_limits<double>::quiet_NaN(), DType::kF32, kGpu);
    backend_for(kGpu).rmsnorm_backward(p.x.to(kGpu), p.w.to(kGpu), p.rstd.to(kGpu), dy, dx, dw);
    const std::string what = "misaligned rmsnorm_backward [300, " + std::to_string(cols) + "]";
    expect_close(dx, want.dx, kExactish, what + " dx");
    expect_close(dw, want.dw, kExactish, what + " dw");
  }
}

// Two launches on the same inputs give the same bits (Note [Deterministic reductions]): the fused
// kernel at the 360m shape and the two-pass one at a wider row.
TEST(CudaRmsNormBackward, BitIdenticalRunToRun) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (const auto& [rows, cols] :
         std::vector<std::pair<int64_t, int64_t>>{{16385, 960}, {1000, 2056}}) {
      const NormProblem p = make_problem(rows, cols, dtype, 700);
      for (bool residual : {false, true}) {
        const Gradients first = run_backward(p, residual, kGpu);
        const Gradients second = run_backward(p, residual, kGpu);
        const std::string what = std::string(dtype_name(dtype)) + " [" + std::to_string(rows) +
                                 ", " + std::to_string(cols) + "]" + (residual ? " with dh" : "");
        EXPECT_EQ(bits_of(first.dw), bits_of(second.dw)) << what;
        EXPECT_EQ(bits_of(first.dx), bits_of(second.dx)) << what;
      }
    }
  }
}

}  // namespace
}  // namespace dtrn
