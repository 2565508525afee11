// The CUDA backend against the CPU backend, its executable specification. Inputs are drawn on the CPU
// (Tensor::uniform), moved with .to(Device::cuda()), run through the public ops, and compared with the
// same ops on the CPU: memory kernels (fill, strided copy, dtype conversion, host round trips, random
// fills) must match bit for bit; elementwise ops too (one IEEE operation per element, then one rounding);
// matrix products within error bounds stated per test. Every test that needs a GPU skips cleanly without
// one; the allocator's size classes and the error checkers' messages are tested everywhere.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/tensor.h"

#ifdef DTRN_WITH_CUDA
// White-box parts of the backend's own test: the allocator's statistics and the CHECK macros.
#include "../../runtime/src/cuda/caching_allocator.h"
#include "../../runtime/src/cuda/cuda_check.h"
#endif

namespace dtrn {
namespace {

using ::testing::HasSubstr;

#define REQUIRE_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no GPU"

const Device kGpu = Device::cuda(0);

Tensor random_cpu(const Shape& shape, uint64_t seed, DType dtype = DType::kF32) {
  return Tensor::uniform(shape, -1.0, 1.0, seed, /*stream=*/7, /*offset=*/0, dtype);
}

// The raw bits of every element of a tensor (any device, any dtype), for bit-exact comparisons that
// also hold for NaN payloads and signed zeros.
std::vector<uint64_t> bits_of(const Tensor& t) {
  Tensor host = t.detach().to(Device::cpu()).contiguous();
  const size_t width = dtype_size(host.dtype());
  const auto* p = static_cast<const unsigned char*>(host.raw_data());
  std::vector<uint64_t> out(host.numel(), 0);
  for (size_t i = 0; i < out.size(); ++i) std::memcpy(&out[i], p + i * width, width);
  return out;
}

Tensor abs_cpu(const Tensor& x) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e = std::fabs(e);
  return Tensor::from_vector(v, x.shape(), DType::kF64);
}

// Checks GPU matmul(a, b) against the CPU's f64 product of the same (already rounded) inputs:
// |gpu - ref| <= rel * (|a| |b|)[i] elementwise, the standard forward-error bound of a dot product,
// which holds however the K terms are ordered or split.
void expect_matmul_matches(const Tensor& a, const Tensor& b, bool ta, bool tb, double rel) {
  Tensor a64 = a.to(DType::kF64), b64 = b.to(DType::kF64);
  const std::vector<double> want = matmul(a64, b64, ta, tb).to_vector();
  const std::vector<double> bound = matmul(abs_cpu(a64), abs_cpu(b64), ta, tb).to_vector();
  Tensor c = matmul(a.to(kGpu), b.to(kGpu), ta, tb);
  ASSERT_EQ(c.device(), kGpu);
  ASSERT_EQ(c.dtype(), a.dtype());
  const std::vector<double> got = c.to_vector();
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size() && bad < 5; ++i) {
    const double tol = rel * bound[i] + 1e-30;
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      ADD_FAILURE() << "element " << i << ": gpu " << got[i] << " vs cpu f64 " << want[i]
                    << " (tolerance " << tol << ") for " << a.describe() << " x " << b.describe()
                    << " ta " << ta << " tb " << tb;
      ++bad;
    }
  }
}

// ---- Tests that run everywhere

TEST(CudaDevice, CountIsReadWithoutThrowing) {
  int count = -1;
  EXPECT_NO_THROW(count = cuda_device_count());
  EXPECT_GE(count, 0);
  EXPECT_EQ(cuda_available(), count > 0);
#ifdef DTRN_WITH_CUDA
  EXPECT_TRUE(cuda_compiled());
#endif
}

TEST(CudaDevice, AbsentGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  EXPECT_THAT([] { Tensor::zeros({2}, DType::kF32, kGpu); },
              ::testing::ThrowsMessage<Error>(HasSubstr("cuda:0")));
}

#ifdef DTRN_WITH_CUDA
TEST(CudaCachingAllocator, RequestsRoundUpTo512Bytes) {
  using cuda::CudaCachingAllocator;
  EXPECT_EQ(CudaCachingAllocator::round_size(1), 512u);
  EXPECT_EQ(CudaCachingAllocator::round_size(512), 512u);
  EXPECT_EQ(CudaCachingAllocator::round_size(1000), 1024u);
  for (size_t n = 1; n < (size_t{1} << 34); n = n * 3 / 2 + 7) {
    const size_t r = CudaCachingAllocator::round_size(n);
    EXPECT_GE(r, n);
    EXPECT_EQ(r % 512, 0u);
    EXPECT_LT(r, n + 512) << n;
  }
}

cudaError_t failing_cuda_call() { return cudaErrorInvalidValue; }
cublasStatus_t failing_cublas_call() { return CUBLAS_STATUS_INVALID_VALUE; }

TEST(CudaChecks, MessagesNameTheErrorTheExpressionAndTheLine) {
  // Neither needs a device: error names and strings are tables inside the libraries.
  EXPECT_THAT([] { CUDA_CHECK(failing_cuda_call()); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(
                  HasSubstr("cudaErrorInvalidValue"), HasSubstr("in failing_cuda_call()"),
                  HasSubstr("cuda_test.cc:"))));
  EXPECT_THAT([] { CUBLAS_CHECK(failing_cublas_call()); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(
                  HasSubstr("CUBLAS_STATUS_INVALID_VALUE"), HasSubstr("in failing_cublas_call()"),
                  HasSubstr("cuda_test.cc:"))));
}
#endif

// ---- Matrix products

// Exact fp32 products (CUBLAS_COMPUTE_32F, no TF32): each output is a K-term dot product whose
// forward error is at most about K * 2^-24 * sum|a||b| (K <= 80 here: 4.8e-6), so 1e-5 of sum|a||b|
// holds for any summation order while TF32 (2^-11 per product, ~5e-4) would fail it.
constexpr double kF32GemmTolerance = 1e-5;
// bf16 output: the exact fp32-accumulated value is rounded once to 8 significant bits (at most 2^-9 of
// |c| <= sum|a||b|); accumulation adds ~K * 2^-24. 8e-3 leaves room yet catches any wrong term
// (each term of uniform inputs is ~1/K of sum|a||b|, > 1% for K <= 80).
constexpr double kBf16GemmTolerance = 8e-3;

#ifdef DTRN_WITH_CUDA
TEST(CudaMemory, PinnedHostTensorsArePageLockedRoundTripExactlyAndAreReused) {
  REQUIRE_GPU();
  Tensor src = random_cpu({1000, 37}, 70).to(kGpu);
  Tensor pinned = Tensor::empty_pinned(src.shape(), DType::kF32);
  EXPECT_TRUE(pinned.device().is_cpu());
  cudaPointerAttributes attributes{};
  ASSERT_EQ(cudaPointerGetAttributes(&attributes, pinned.raw_data()), cudaSuccess);
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost);  // page-locked, not pageable (cudaMemoryTypeUnregistered)
  pinned.copy_(src);
  EXPECT_EQ(bits_of(pinned), bits_of(src));
  // A block of the same size comes back for the next request; another size gets its own.
  const void* first = pinned.raw_data();
  pinned = Tensor();
  EXPECT_EQ(Tensor::empty_pinned({1000, 37}, DType::kF32).raw_data(), first);
  EXPECT_NE(Tensor::empty_pinned({1000, 38}, DType::kF32).raw_data(), first);
}
#endif

TEST(CudaGemm, F32TinyAndOddShapes) {
  REQUIRE_GPU();
  expect_matmul_matches(random_cpu({1, 1}, 1), random_cpu({1, 1}, 2), false, false,
                        kF32GemmTolerance);
  expect_matmul_matches(random_cpu({37, 53}, 3), random_cpu({53, 29}, 4), false, false,
                        kF32GemmTolerance);
  expect_matmul_matches(random_cpu({53, 37}, 5), random_cpu({29, 53}, 6), true, true,
                        kF32GemmTolerance);
}

TEST(CudaGemm, F32BatchedEveryTransposeCombination) {
  REQUIRE_GPU();
  constexpr int64_t kB = 3, kM = 64, kK = 48, kN = 80;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_cpu(ta ? Shape{kB, kK, kM} : Shape{kB, kM, kK}, 10 + 2 * ta + tb);
      Tensor b = random_cpu(tb ? Shape{kB, kN, kK} : Shape{kB, kK, kN}, 20 + 2 * ta + tb);
      expect_matmul_matches(a, b, ta, tb, kF32GemmTolerance);
    }
  }
}

TEST(CudaGemm, F32SharedRightHandSide) {
  REQUIRE_GPU();
  // A 2-D b used by every batch entry: folded into one tall product without trans_a, passed to
  // cuBLASLt with a zero batch stride with it.
  constexpr int64_t kB = 3, kM = 64, kK = 48, kN = 80;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_cpu(ta ? Shape{kB, kK, kM} : Shape{kB, kM, kK}, 30 + 2 * ta + tb);
      Tensor b = random_cpu(tb ? Shape{kN, kK} : Shape{kK, kN}, 40 + 2 * ta + tb);
      expect_matmul_matches(a, b, ta, tb, kF32GemmTolerance);
    }
  }
}

TEST(CudaGemm, ActivationLinearsEqualTheComposedOpsBitForBitWithF32WeightGradients) {
  REQUIRE_GPU();
  // bf16 leaves on the GPU: the weight's gradient accumulates straight into its f32 buffer (matmul.cc).
  // Recomputing the activation in the backward must give exactly the composed ops' values and gradients.
  auto run = [](bool fused, bool glu) {
    auto input = [](const Shape& shape, uint64_t seed, double range) {
      Tensor t = scale(random_cpu(shape, seed), range).to(DType::kBF16).to(kGpu);
      t.set_requires_grad(true);
      return t;
    };
    Tensor x = input({37, 48}, 50, 4.0), up = input({37, 48}, 54, 1.0), w = input({24, 48}, 51, 1.0),
           b = input({24}, 52, 1.0);
    Tensor y = glu ? (fused ? swiglu_linear(x, up, w) : linear(swiglu(x, up), w))
                   : (fused ? silu_linear(x, w, b) : linear(silu(x), w, b));
    sum(mul(y.to(DType::kF32), random_cpu({37, 24}, 53).to(kGpu))).backward();
    return glu ? std::vector<Tensor>{y, x.grad(), up.grad(), w.grad()}
               : std::vector<Tensor>{y, x.grad(), w.grad(), b.grad()};
  };
  for (bool glu : {false, true}) {
    const std::vector<Tensor> fused = run(true, glu), composed = run(false, glu);
    EXPECT_EQ(fused[glu ? 3 : 2].dtype(), DType::kF32);
    for (size_t i = 0; i < fused.size(); ++i) {
      EXPECT_EQ(bits_of(fused[i]), bits_of(composed[i])) << (glu ? "swiglu" : "silu") << " output/gradient " << i;
    }
  }
}

// The MLP's residual added inside the down projection (cuBLASLt reads it as C, Backend::gemm_add) against
// the composed product and add on the GPU: one rounding of the sum instead of two, so the outputs agree
// within one step of the dtype (2^-8 relative for bf16, 2^-22 for f32); the gradients do not depend on
// the residual and agree to the bit, and the residual's is the output's.
TEST(CudaGemm, ResidualAddedInsideTheProduct) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    auto run = [dtype](bool fused) {
      auto input = [dtype](const Shape& shape, uint64_t seed) {
        Tensor t = random_cpu(shape, seed).to(dtype).to(kGpu);
        t.set_requires_grad(true);
        return t;
      };
      Tensor x = input({2, 37, 48}, 110), up = input({2, 37, 48}, 111), w = input({24, 48}, 112),
             r = input({2, 37, 24}, 113);
      Tensor y = fused ? swiglu_linear(x, up, w, r) : add(linear(swiglu(x, up), w), r);
      Tensor dy = random_cpu({2, 37, 24}, 114).to(dtype).to(kGpu);
      y.backward(dy);
      return std::vector<Tensor>{y, x.grad(), up.grad(), w.grad(), r.grad(), dy, r};
    };
    const std::vector<Tensor> fused = run(true), composed = run(false);
    const std::vector<double> got = fused[0].to_vector(), want = composed[0].to_vector(),
                              r = composed[6].to_vector();
    // The composed path rounds the product p (by at most half a step of p, 2^-8 |p| in bf16) before
    // rounding the sum; the fused one rounds the exact sum once. Two roundings of values that close can
    // land a whole step of y apart (2^-7 |y| in bf16), and where p and r cancel p's rounding dominates.
    const double step = dtype == DType::kBF16 ? 1.0 / 128 : 2.0 / (1 << 23);
    for (size_t i = 0; i < got.size(); ++i) {
      const double tol = step * (std::fabs(want[i]) + std::fabs(want[i] - r[i]) / 2) + 1e-30;
      ASSERT_NEAR(got[i], want[i], tol) << dtype_name(dtype) << " output " << i;
    }
    for (int i = 1; i <= 3; ++i) EXPECT_EQ(bits_of(fused[i]), bits_of(composed[i])) << dtype_name(dtype) << " gradient " << i;
    // (a bf16 leaf's gradient is kept in f32: the same values)
    EXPECT_EQ(fused[4].to_vector(), fused[5].to_vector()) << "the residual's gradient is the output's";
  }
}

TEST(CudaGemm, Bf16BatchedAndShared) {
  REQUIRE_GPU();
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_cpu(ta ? Shape{2, 40, 24} : Shape{2, 24, 40}, 50 + 2 * ta + tb, DType::kBF16);
      Tensor b = random_cpu(tb ? Shape{2, 56, 40} : Shape{2, 40, 56}, 60 + 2 * ta + tb, DType::kBF16);
      expect_matmul_matches(a, b, ta, tb, kBf16GemmTolerance);
      Tensor shared = random_cpu(tb ? Shape{56, 40} : Shape{40, 56}, 70 + 2 * ta + tb, DType::kBF16);
      expect_matmul_matches(a, shared, ta, tb, kBf16GemmTolerance);
    }
  }
  expect_matmul_matches(random_cpu({37, 53}, 80, DType::kBF16), random_cpu({53, 29}, 81, DType::kBF16),
                        false, false, kBf16GemmTolerance);
}

TEST(CudaGemm, F64MatchesTheCpu) {
  REQUIRE_GPU();
  // f64 products: 1e-13 of sum|a||b| is far above K * 2^-53 and far below any f32 path.
  expect_matmul_matches(random_cpu({5, 33, 17}, 90, DType::kF64),
                        random_cpu({5, 17, 9}, 91, DType::kF64), false, false, 1e-13);
}

TEST(CudaGemm, LinearLayerOnTheGpu) {
  REQUIRE_GPU();
  // x [2, 5, 24] against a [16, 24] weight: the trans_b shared-weight path every model layer takes.
  Tensor x = random_cpu({2, 5, 24}, 95), w = random_cpu({16, 24}, 96), bias = random_cpu({16}, 97);
  const std::vector<double> want = linear(x, w, bias).to_vector();
  const std::vector<double> got = linear(x.to(kGpu), w.to(kGpu), bias.to(kGpu)).to_vector();
  ASSERT_EQ(got.size(), want.size());
  // K = 24 terms of magnitude < 1 plus a bias: 24 * 2 * 2^-24 < 3e-6 absolute per element.
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 3e-6) << i;
}

// A bf16 weight's gradient goes straight into its f32 buffer (Note [Weight gradients straight into their
// f32 buffers]): two backwards through a linear layer (the 3-D shared-weight path and the 2-D path)
// accumulate x^T dy in f32. Reference: the CPU's f64 products of the same bf16-rounded values; the GPU
// sums K = 10 bf16 products (exact in f32) in f32: relative error below 1e-6, tolerance 1e-5.
TEST(CudaGemm, Bf16WeightGradientsAccumulateInF32) {
  REQUIRE_GPU();
  Tensor x3 = random_cpu({2, 5, 24}, 98, DType::kBF16), x2 = random_cpu({7, 24}, 99, DType::kBF16);
  Tensor w = random_cpu({16, 24}, 100, DType::kBF16);
  Tensor up3 = random_cpu({2, 5, 16}, 101, DType::kBF16), up2 = random_cpu({7, 16}, 102, DType::kBF16);
  Tensor wg = w.to(kGpu).set_requires_grad(true);
  linear(x3.to(kGpu), wg).backward(up3.to(kGpu));
  linear(x2.to(kGpu), wg).backward(up2.to(kGpu));
  ASSERT_EQ(wg.grad().dtype(), DType::kF32);
  Tensor w64 = w.to(DType::kF64).set_requires_grad(true);
  linear(x3.to(DType::kF64), w64).backward(up3.to(DType::kF64));
  linear(x2.to(DType::kF64), w64).backward(up2.to(DType::kF64));
  const std::vector<double> got = wg.grad().to_vector(), want = w64.grad().to_vector();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * std::max(1.0, std::fabs(want[i]))) << i;
}

TEST(CudaGemm, MismatchedShapesThrow) {
  REQUIRE_GPU();
  Tensor a = Tensor::zeros({4, 5}, DType::kF32, kGpu), b = Tensor::zeros({6, 3}, DType::kF32, kGpu);
  EXPECT_THAT([&] { matmul(a, b); }, ::testing::ThrowsMessage<Error>(HasSubstr("inner dimensions")));
  Tensor h = Tensor::zeros({5, 3}, DType::kF32, kGpu).to(DType::kBF16);
  EXPECT_THROW(matmul(a, h), Error);  // dtypes differ
}

// ---- Elementwise

void expect_binary_matches(Tensor (*op)(const Tensor&, const Tensor&), const Tensor& a,
                           const Tensor& b) {
  // The CPU computes in f32; a bf16 result is that f32 value rounded once, as the GPU does.
  const bool bf16 = a.dtype() == DType::kBF16;
  Tensor want = bf16 ? op(a.to(DType::kF32), b.to(DType::kF32)).to(DType::kBF16) : op(a, b);
  Tensor got = op(a.to(kGpu), b.to(kGpu));
  EXPECT_EQ(got.shape(), want.shape());
  EXPECT_EQ(bits_of(got), bits_of(want)) << a.describe() << " with " << b.describe();
}

TEST(CudaElementwise, BroadcastingAddSubMulMatchTheCpuBitForBit) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF64}) {
    Tensor a = random_cpu({4, 1, 37}, 100, dtype), b = random_cpu({5, 1}, 101, dtype);
    expect_binary_matches(add, a, b);
    expect_binary_matches(sub, a, b);
    expect_binary_matches(mul, a, b);
    // 740 elements: whole 16-byte chunks and a tail.
    Tensor c = random_cpu({4, 5, 37}, 102, dtype);
    expect_binary_matches(add, c, c);
    expect_binary_matches(mul, c, random_cpu({37}, 103, dtype));
    // Contiguous operands one element past a 16-byte boundary take the one-element-per-access kernel.
    Tensor big = random_cpu({741}, 104, dtype);
    Tensor shifted_gpu = big.to(kGpu).narrow(0, 1, 740), c_gpu = c.reshape({740}).to(kGpu);
    Tensor want = dtype == DType::kBF16
                      ? add(big.narrow(0, 1, 740).to(DType::kF32), c.reshape({740}).to(DType::kF32)).to(dtype)
                      : add(big.narrow(0, 1, 740), c.reshape({740}));
    EXPECT_EQ(bits_of(add(shifted_gpu, c_gpu)), bits_of(want)) << dtype_name(dtype);
    // A row broadcast over a matrix (a bias), on either side: rows of whole 16-byte chunks for every
    // dtype (480 columns, the router's) take the row kernel, 37 columns the strided one.
    for (int64_t cols : {480, 48, 37}) {
      Tensor m = random_cpu({33, cols}, 105, dtype), row = random_cpu({cols}, 106, dtype);
      expect_binary_matches(add, m, row);
      expect_binary_matches(sub, row, m);
      expect_binary_matches(mul, row.reshape({1, cols}), m);
    }
  }
}

// Arithmetic kernels round to bf16 with the hardware's instruction, which writes NaN results as the
// canonical NaN (Note [bf16 rounding in one instruction]): a NaN of either sign stays NaN through an
// add, a product and SwiGLU, while finite results keep the CPU's bits (the tests above).
TEST(CudaElementwise, NanResultsStayNanInBf16) {
  REQUIRE_GPU();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = Tensor::from_vector({nan, -nan, 1.0, -2.0}, {4}).to(DType::kBF16).to(kGpu);
  Tensor one = Tensor::full({4}, 1.0, DType::kBF16, kGpu);
  for (const Tensor& y : {add(x, one), mul(x, one), swiglu(x, one)}) {
    const std::vector<double> v = y.to(DType::kF64).to(Device::cpu()).to_vector();
    EXPECT_TRUE(std::isnan(v[0]) && std::isnan(v[1])) << v[0] << " " << v[1];
    EXPECT_FALSE(std::isnan(v[2]) || std::isnan(v[3]));
  }
}

TEST(CudaElementwise, StridedInputs) {
  REQUIRE_GPU();
  // A transposed and a narrowed operand reach the kernel as strided views.
  Tensor a = random_cpu({6, 9}, 110), b = random_cpu({9, 6}, 111);
  Tensor want = add(a, b.transpose(0, 1));
  Tensor got = add(a.to(kGpu), b.to(kGpu).transpose(0, 1));
  EXPECT_EQ(bits_of(got), bits_of(want));
  Tensor n_want = mul(a.narrow(1, 2, 4), b.transpose(0, 1).narrow(1, 1, 4));
  Tensor n_got = mul(a.to(kGpu).narrow(1, 2, 4), b.to(kGpu).transpose(0, 1).narrow(1, 1, 4));
  EXPECT_EQ(bits_of(n_got), bits_of(n_want));
}

// ---- Memory: copies, conversions, fills, host round trips

TEST(CudaMemory, HostRoundTripIsExact) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kF64, DType::kF32, DType::kBF16}) {
    Tensor x = random_cpu({3, 17, 5}, 120, dtype);
    EXPECT_EQ(bits_of(x.to(kGpu)), bits_of(x));
  }
  Tensor ids = Tensor::from_ints({0, -1, int64_t{1} << 60, 42}, {4});
  EXPECT_EQ(ids.to(kGpu).to_ints(), ids.to_ints());
  Tensor empty = Tensor::empty({0, 3}, DType::kF32, kGpu);
  EXPECT_EQ(empty.to(Device::cpu()).numel(), 0);
}

TEST(CudaMemory, TransposedAndNarrowedViewsCopyExactly) {
  REQUIRE_GPU();
  Tensor x = random_cpu({6, 7, 9}, 130);
  Tensor g = x.to(kGpu);
  EXPECT_EQ(bits_of(g.transpose(0, 2).contiguous()), bits_of(x.transpose(0, 2).contiguous()));
  EXPECT_EQ(bits_of(g.narrow(1, 2, 3).transpose(1, 2).contiguous()),
            bits_of(x.narrow(1, 2, 3).transpose(1, 2).contiguous()));
  // copy_ into a strided destination.
  Tensor dst_cpu = Tensor::zeros({9, 7, 6}), dst_gpu = Tensor::zeros({9, 7, 6}, DType::kF32, kGpu);
  dst_cpu.transpose(0, 2).copy_(x);
  dst_gpu.transpose(0, 2).copy_(g);
  EXPECT_EQ(bits_of(dst_gpu), bits_of(dst_cpu));
}

// copy_ across the host and the device: straight into the destination where both sides agree in dtype
// and the destination is contiguous (views of the source are made contiguous first), through a staging
// copy otherwise. Every case lands the same bits as the same copy on the CPU.
TEST(CudaMemory, CopiesBetweenHostAndDeviceLandExactly) {
  REQUIRE_GPU();
  const Tensor x = random_cpu({5, 8, 6}, 131);
  const Tensor g = x.to(kGpu);
  auto expect_copy = [](const Tensor& dst, const Tensor& src, const Tensor& want, const char* what) {
    dst.copy_(src);
    EXPECT_EQ(bits_of(dst.to(Device::cpu()).contiguous()), bits_of(want.contiguous())) << what;
  };
  expect_copy(Tensor::zeros({5, 8, 6}), g, x, "device into host");
  expect_copy(Tensor::zeros({5, 8, 6}, DType::kF32, kGpu), x, x, "host into device");
  expect_copy(Tensor::zeros({6, 8, 5}), g.transpose(0, 2), x.transpose(0, 2), "device view into host");
  expect_copy(Tensor::zeros({5, 3, 6}, DType::kF32, kGpu), x.narrow(1, 2, 3), x.narrow(1, 2, 3),
              "host view into device");
  Tensor host_view = Tensor::zeros({6, 8, 5});
  expect_copy(host_view.transpose(0, 2), g, x, "device into a host view");
  expect_copy(Tensor::zeros({5, 8, 6}, DType::kBF16), g, x.to(DType::kBF16), "device f32 into host bf16");
}

TEST(CudaMemory, DtypeConversionsMatchTheCpuBitForBit) {
  REQUIRE_GPU();
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Ties to even in bf16 (1 + 2^-8 and 1 + 3 * 2^-8 sit halfway), values that round up into the next
  // binade or to infinity, subnormals, signed zeros, infinities and NaN.
  std::vector<double> values = {0.0,  -0.0, 1.0,  1.0 + std::ldexp(1.0, -8),
                                1.0 + 3 * std::ldexp(1.0, -8), 1.99999,  -3.0e38, 3.4e38,
                                1e-40, -1e-45, inf, -inf, nan, 65504.0, 0.1, -7.25};
  Tensor random = random_cpu({257}, 140, DType::kF64);
  for (double v : random.to_vector()) values.push_back(v * 1000.0);
  const Shape shape = {static_cast<int64_t>(values.size())};
  Tensor f64 = Tensor::from_vector(values, shape, DType::kF64);
  for (DType from : {DType::kF64, DType::kF32, DType::kBF16}) {
    Tensor src = f64.to(from);
    Tensor src_gpu = src.to(kGpu);
    for (DType to : {DType::kF64, DType::kF32, DType::kBF16}) {
      EXPECT_EQ(bits_of(src_gpu.to(to)), bits_of(src.to(to)))
          << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
  // Integers: i32 <-> i64, and integers to floating (through the CPU's double path).
  Tensor i64 = Tensor::from_ints({0, 1, -1, 123456789, -2147483648LL, 2147483647}, {6});
  Tensor i64_gpu = i64.to(kGpu);
  EXPECT_EQ(bits_of(i64_gpu.to(DType::kI32)), bits_of(i64.to(DType::kI32)));
  EXPECT_EQ(bits_of(i64_gpu.to(DType::kI32).to(DType::kI64)), bits_of(i64));
  EXPECT_EQ(bits_of(i64_gpu.to(DType::kF32)), bits_of(i64.to(DType::kF32)));
  EXPECT_EQ(bits_of(i64_gpu.to(DType::kBF16)), bits_of(i64.to(DType::kBF16)));
  // Strided and converting at once.
  Tensor m = random_cpu({5, 8}, 141);
  EXPECT_EQ(bits_of(m.to(kGpu).transpose(0, 1).to(DType::kBF16)),
            bits_of(m.transpose(0, 1).to(DType::kBF16)));
}

TEST(CudaMemory, FillMatchesTheCpu) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kF64, DType::kF32, DType::kBF16, DType::kI32, DType::kI64}) {
    for (double v : {0.0, -0.0, 1.0 / 3.0, -7.0, 1e30}) {
      if (!is_floating(dtype) && std::fabs(v) > 1e9) continue;  // out of range: undefined in C++
      EXPECT_EQ(bits_of(Tensor::full({3, 333}, v, dtype, kGpu)),
                bits_of(Tensor::full({3, 333}, v, dtype)))
          << dtype_name(dtype) << " " << v;
    }
  }
}

// ---- Random fills

TEST(CudaRandom, UniformIsBitIdenticalToTheCpu) {
  REQUIRE_GPU();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF64}) {
    // An offset that is not a multiple of 4 starts inside a Philox block; 1001 elements end inside one.
    const uint64_t seed = 0x0123456789abcdefULL, stream = 3, offset = 6;
    Tensor cpu = Tensor::uniform({7, 143}, -0.5, 2.0, seed, stream, offset, dtype);
    Tensor gpu = Tensor::uniform({7, 143}, -0.5, 2.0, seed, stream, offset, dtype, kGpu);
    EXPECT_EQ(bits_of(gpu), bits_of(cpu)) << dtype_name(dtype);
  }
}

TEST(CudaRandom, NormalAgreesWithTheCpu) {
  REQUIRE_GPU();
  // Box-Muller goes through double log and cos, which are within 2 ulp of glibc's on the device, so
  // draws agree to ~1e-15 relative in f64; after rounding to f32 nearly all are bit-identical and any
  // other differs by one f32 ulp (6e-8 relative).
  Tensor cpu = Tensor::normal({4096}, 0.25, 2.0, 99, 5, 3, DType::kF64);
  Tensor gpu = Tensor::normal({4096}, 0.25, 2.0, 99, 5, 3, DType::kF64, kGpu);
  const std::vector<double> want = cpu.to_vector(), got = gpu.to_vector();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-14 * std::max(1.0, std::fabs(want[i]))) << i;
  }
  const std::vector<uint64_t> cpu32 = bits_of(cpu.to(DType::kF32));
  const std::vector<uint64_t> gpu32 =
      bits_of(Tensor::normal({4096}, 0.25, 2.0, 99, 5, 3, DType::kF32, kGpu));
  int differ = 0;
  for (size_t i = 0; i < cpu32.size(); ++i) differ += cpu32[i] != gpu32[i];
  EXPECT_LE(differ, 4);
}

// ---- Allocator

#ifdef DTRN_WITH_CUDA
// What a D block asks of the allocator: every micro-batch, tensors of slightly different sizes. Once the
// pool holds a step's worth, repeating the pattern with sizes moved by up to 20% reserves nothing new.
TEST(CudaAllocator, VaryingSizesAreServedFromReservedMemory) {
  REQUIRE_GPU();
  cuda::CudaCachingAllocator& allocator = cuda::caching_allocator();
  auto step = [&](double scale) {
    std::vector<std::pair<void*, size_t>> live;
    for (size_t mib : {9, 3, 17, 1, 6, 12}) {
      const size_t bytes = static_cast<size_t>(scale * static_cast<double>(mib << 20)) + 123;
      live.emplace_back(allocator.allocate(bytes), bytes);
      if (live.size() % 2 == 0) {  // free some while others live, as a forward and backward do
        allocator.deallocate(live.front().first, live.front().second);
        live.erase(live.begin());
      }
    }
    for (auto& [p, n] : live) allocator.deallocate(p, n);
  };
  step(1.2);  // warm: the largest sizes first
  const uint64_t reservations = allocator.stats(0).device_mallocs;
  for (double scale : {1.0, 0.85, 1.17, 0.93, 1.2, 0.8}) step(scale);
  EXPECT_EQ(allocator.stats(0).device_mallocs, reservations);
  // Through tensors: a dropped tensor's memory serves the next one.
  { Tensor t = Tensor::empty({123, 45}, DType::kF32, kGpu); }
  const uint64_t before = allocator.stats(0).device_mallocs;
  Tensor u = Tensor::empty({123, 45}, DType::kF32, kGpu);
  EXPECT_EQ(allocator.stats(0).device_mallocs, before);
}

TEST(CudaAllocator, StatisticsFollowAllocateAndFree) {
  REQUIRE_GPU();
  cuda::CudaCachingAllocator& allocator = cuda::caching_allocator();
  const size_t bytes = (size_t{3} << 20) + 5;  // a size no other test uses
  const size_t block = cuda::CudaCachingAllocator::round_size(bytes);
  EXPECT_EQ(block % 512, 0u);
  EXPECT_GE(block, bytes);
  allocator.reset_peak();
  const cuda::AllocatorStats before = allocator.stats(0);
  void* p = allocator.allocate(bytes);
  cuda::AllocatorStats during = allocator.stats(0);
  EXPECT_EQ(during.allocated_bytes, before.allocated_bytes + block);
  EXPECT_EQ(during.allocations, before.allocations + 1);
  EXPECT_GE(during.peak_allocated_bytes, during.allocated_bytes);
  allocator.deallocate(p, bytes);
  cuda::AllocatorStats after = allocator.stats(0);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_GE(after.cached_bytes, block);  // kept by the pool
  void* q = allocator.allocate(bytes);
  EXPECT_EQ(allocator.stats(0).cache_hits, after.cache_hits + 1);
  EXPECT_EQ(allocator.stats(0).device_mallocs, after.device_mallocs);
  allocator.deallocate(q, bytes);
  allocator.empty_cache();
  EXPECT_LT(allocator.stats(0).cached_bytes, after.cached_bytes);
  // With the pool emptied, a block larger than any before makes it grow, by at least the block less
  // what the pool still held free (memory the trim could not return, in chunks that earlier tests'
  // live tensors still use), and is the largest request that did.
  const size_t large = std::max<size_t>(allocator.stats(0).largest_block, size_t{64} << 20) + (size_t{1} << 20);
  const cuda::AllocatorStats empty = allocator.stats(0);
  void* r = allocator.allocate(large);
  const cuda::AllocatorStats grown = allocator.stats(0);
  EXPECT_EQ(grown.device_mallocs, empty.device_mallocs + 1);
  EXPECT_GE(grown.grown_bytes + empty.cached_bytes, empty.grown_bytes + large);
  EXPECT_EQ(grown.largest_growing_request, cuda::CudaCachingAllocator::round_size(large));
  allocator.deallocate(r, large);
}
#endif

TEST(CudaAllocator, OutOfMemoryIsAClearErrorAndTheDeviceStaysUsable) {
  REQUIRE_GPU();
  Allocator& allocator = allocator_for(kGpu);
  EXPECT_THAT([&] { allocator.allocate(size_t{1} << 50); },  // 1 PiB
              ::testing::ThrowsMessage<Error>(
                  ::testing::AllOf(HasSubstr("out of memory"), HasSubstr("1125899906842624"))));
  Tensor x = random_cpu({8}, 150);
  EXPECT_EQ(bits_of(add(x.to(kGpu), x.to(kGpu))), bits_of(add(x, x)));
}

}  // namespace
}  // namespace dtrn
