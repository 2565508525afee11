// Helpers of the CUDA-against-CPU tests of the training kernels (cuda_nn_test.cc): random inputs drawn
// on the CPU, the CPU reference of a GPU dtype, elementwise comparison within stated tolerances, raw
// bits for exact comparisons, and one driver that runs an op forward and backward on both devices.
//
// Reference policy: the GPU computes on inputs rounded to its dtype; the CPU computes on the same
// values in reference_dtype (bf16 widens exactly to f32, the CPU backend's bf16 stand-in). A bf16 GPU
// result is the GPU's f32-or-better value rounded once, which moves it by at most 2^-9 of its
// magnitude, so bf16 tolerances are the f32 ones plus kBf16Rounding = 2^-8 relative (twice the bound,
// leaving room for the f32-level differences that precede the rounding).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::gpu_testing {

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no GPU"

inline const Device kGpu = Device::cuda(0);

constexpr double kBf16Rounding = 1.0 / 256;
// One f32 rounding step (2^-23): what separates two f32 results rounded from double values that agree
// to double precision, when they straddle a rounding boundary.
constexpr double kF32Ulp = 1.0 / (1 << 23);

inline Tensor random_cpu(const Shape& shape, uint64_t seed, DType dtype = DType::kF32,
                         double lo = -1.0, double hi = 1.0) {
  return Tensor::uniform(shape, lo, hi, seed, /*stream=*/11, /*offset=*/0, dtype);
}

inline DType reference_dtype(DType dtype) { return dtype == DType::kBF16 ? DType::kF32 : dtype; }

// |got - want| <= abs + rel * |want| for every element.
struct Tol {
  double abs;
  double rel;
};

// Kernels that compute the CPU's double expression from identical inputs: they differ by the final f32
// rounding at most (cuda_nn_test.cc's header says which).
constexpr Tol kExactish{1e-10, 2 * kF32Ulp};
// f64: every path computes in double; 1e-12 is far above double rounding and far below any f32 path.
constexpr Tol kF64{1e-12, 1e-12};

inline Tol widen_for(DType got_dtype, Tol tol) {
  return got_dtype == DType::kBF16 ? Tol{tol.abs, tol.rel + kBf16Rounding} : tol;
}

// Raw bits of every element (any device, any dtype), for exact comparisons.
inline std::vector<uint64_t> bits_of(const Tensor& t) {
  Tensor host = t.detach().to(Device::cpu()).contiguous();
  const size_t width = dtype_size(host.dtype());
  const auto* p = static_cast<const unsigned char*>(host.raw_data());
  std::vector<uint64_t> out(host.numel(), 0);
  for (size_t i = 0; i < out.size(); ++i) std::memcpy(&out[i], p + i * width, width);
  return out;
}

// got and want defined alike and, where defined, of one shape and dtype and the same bits; `what`
// names the pair in a failure.
inline void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.defined(), want.defined()) << what;
  if (!want.defined()) return;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  EXPECT_TRUE(bits_of(got) == bits_of(want)) << what << " differs from the unfused composition";
}

// Every element within its own tolerance tol[i]; NaN in got always fails. Reports the first few.
inline void expect_within(const std::vector<double>& got, const std::vector<double>& want,
                          const std::vector<double>& tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol[i])) {
      ADD_FAILURE() << what << ": element " << i << ": gpu " << got[i] << " vs cpu " << want[i]
                    << " (tolerance " << tol[i] << ")";
      ++bad;
    }
  }
}

inline void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> g = got.to_vector(), w = want.to_vector();
  std::vector<double> bound(w.size());
  for (size_t i = 0; i < w.size(); ++i) bound[i] = tol.abs + tol.rel * std::fabs(w[i]);
  expect_within(g, w, bound, what);
}

// A fresh leaf requiring grad with x's values (x itself is left alone).
inline Tensor leaf(const Tensor& x) {
  Tensor t = x.detach();
  t.set_requires_grad(true);
  return t;
}

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Runs f forward and backward on the CPU and on the GPU and compares the outputs and the gradients of
// every floating input. Floating inputs are first rounded to `dtype` (the GPU's) and widened to
// reference_dtype for the CPU; integer inputs (indices) go as they are. The upstream gradient is
// random in the GPU output's dtype. Tolerances are the f32 (or f64) ones; bf16 results are widened.
inline void expect_op_matches(const TensorFn& f, const std::vector<Tensor>& inputs, DType dtype,
                              Tol forward_tol, Tol grad_tol, const std::string& what) {
  std::vector<Tensor> cpu_in, gpu_in;
  std::vector<bool> differentiable;
  for (const Tensor& x : inputs) {
    const bool floating = is_floating(x.dtype());
    differentiable.push_back(floating);
    if (!floating) {
      cpu_in.push_back(x);
      gpu_in.push_back(x.to(kGpu));
      continue;
    }
    Tensor rounded = x.to(dtype);
    cpu_in.push_back(leaf(rounded.to(reference_dtype(dtype))));
    gpu_in.push_back(leaf(rounded.to(kGpu)));
  }
  const std::string name = what + " (" + std::string(dtype_name(dtype)) + ")";
  Tensor want = f(cpu_in), got = f(gpu_in);
  ASSERT_EQ(got.device(), kGpu) << name;
  expect_close(got, want, widen_for(got.dtype(), forward_tol), name + " forward");

  Tensor upstream = random_cpu(got.shape(), 4242, got.dtype());
  want.backward(upstream.to(want.dtype()));
  got.backward(upstream.to(kGpu));
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!differentiable[k]) continue;
    expect_close(gpu_in[k].grad(), cpu_in[k].grad(), widen_for(dtype, grad_tol),
                 name + " gradient of input " + std::to_string(k));
  }
}

}  // namespace dtrn::gpu_testing
