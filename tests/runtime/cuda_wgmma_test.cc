// The wgmma layouts of runtime/src/cuda/wgmma.cuh (the swizzled shared tiles, the matrix descriptors, the
// register A fragments and the accumulator layout) through wgmma_check.h's one-warpgroup product
// C [64][n] = A [64][k] B, against the product computed here. Entries are multiples of 1/4 in [-2, 2]:
// exact in bf16, their products multiples of 1/16, and every sum of up to 128 of them (|C| <= 512) is
// exact in f32 in any order, so the comparison is exact: a wrong descriptor offset, swizzle, fragment
// position or transpose flag moves entries by 1/16 or more. Each operand form is tested on its own so
// that a failure names the piece: SS with both operands K-major is S = Q K^T of the attention forward,
// RS with B MN-major is O = P V; the other two forms separate the A fragments from the MN-major
// descriptor. k runs over one instruction (16), a partial and a whole 64-column block (48, 64), a
// second block (80, 128), and n over 64 and 128 (for MN-major B the second 64 columns sit one leading
// byte offset away). Skips without a GPU of compute capability 9.0 or without sm_90a code in the build.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dtrn/runtime/tensor.h"

#ifdef DTRN_WITH_CUDA
#include "../../runtime/src/cuda/cuda_context.h"
#include "../../runtime/src/cuda/wgmma_check.h"
#include "../../runtime/src/cuda/wgmma_support.h"

namespace dtrn {
namespace {

#define REQUIRE_WGMMA()                                                            \
  if (!cuda_available()) GTEST_SKIP() << "no GPU";                                 \
  if (const std::string why = cuda::wgmma_unavailable_reason(0); !why.empty()) { \
    GTEST_SKIP() << why;                                                           \
  }

const Device kGpu = Device::cuda(0);

// Multiples of 1/4 in [-2, 2].
std::vector<double> quarters(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(-8, 8);
  std::vector<double> values(count);
  for (double& x : values) x = pick(rng) / 4.0;
  return values;
}

std::string describe(const cuda::WgmmaCheckShape& s) {
  std::ostringstream out;
  out << "n " << s.n << " k " << s.k << " A from " << (s.a_in_registers ? "registers" : "shared memory")
      << ", B " << (s.b_mn_major ? "MN-major [k][n]" : "K-major [n][k]");
  return out.str();
}

void expect_exact_product(const cuda::WgmmaCheckShape& shape, uint32_t seed) {
  SCOPED_TRACE(describe(shape));
  const int n = shape.n, k = shape.k;
  const std::vector<double> a = quarters(size_t{64} * k, seed), b = quarters(size_t{1} * n * k, seed + 1);
  const Tensor a_gpu = Tensor::from_vector(a, {64, k}, DType::kBF16, kGpu);
  const Tensor b_gpu = Tensor::from_vector(
      b, shape.b_mn_major ? Shape{k, n} : Shape{n, k}, DType::kBF16, kGpu);
  const Tensor c_gpu = Tensor::empty({64, n}, DType::kF32, kGpu);
  cuda::launch_wgmma_check(shape, a_gpu.raw_data(), b_gpu.raw_data(), c_gpu.data<float>(),
                           cuda::stream_for(0));
  const std::vector<double> got = c_gpu.to_vector();
  int wrong = 0;
  for (int i = 0; i < 64; ++i) {
    for (int j = 0; j < n; ++j) {
      double want = 0;
      for (int p = 0; p < k; ++p) {
        want += a[i * k + p] * (shape.b_mn_major ? b[p * n + j] : b[j * k + p]);
      }
      const double g = got[static_cast<size_t>(i) * n + j];
      if (g != want && wrong++ < 5) {
        ADD_FAILURE() << "C[" << i << "][" << j << "] = " << g << ", want " << want;
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "entries of C wrong";
}

const int kDepths[] = {16, 48, 64, 80, 128};

void expect_form(bool a_in_registers, bool b_mn_major, uint32_t seed) {
  for (int n : {64, 128}) {
    for (int k : kDepths) expect_exact_product({n, k, a_in_registers, b_mn_major}, seed++);
  }
}

TEST(CudaWgmma, SharedAAndKMajorB) {
  REQUIRE_WGMMA();
  expect_form(/*a_in_registers=*/false, /*b_mn_major=*/false, 1);
}

TEST(CudaWgmma, RegisterAAndMnMajorB) {
  REQUIRE_WGMMA();
  expect_form(/*a_in_registers=*/true, /*b_mn_major=*/true, 100);
}

TEST(CudaWgmma, RegisterAAndKMajorB) {
  REQUIRE_WGMMA();
  expect_form(/*a_in_registers=*/true, /*b_mn_major=*/false, 200);
}

TEST(CudaWgmma, SharedAAndMnMajorB) {
  REQUIRE_WGMMA();
  expect_form(/*a_in_registers=*/false, /*b_mn_major=*/true, 300);
}

}  // namespace
}  // namespace dtrn
#endif
