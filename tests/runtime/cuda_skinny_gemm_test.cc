// The CUDA backend's skinny matrix products (runtime/src/cuda/skinny_gemm.cu: m, n or k at most 8, the
// router's last linear layer and its gradients) against the CPU backend's gemm in f64 on the same
// inputs, through the backend's gemm (every transpose, alpha and beta) and through the op layer (linear
// forward and backward with the router's [2, R] weight). Every test skips without a GPU.
//
// Two kinds of reference comparison:
//   - exact: small integers (|x| <= 3) make every product and every partial sum an integer below 2^24,
//     exact in f32 whatever the order of the sum, so an f32 result must equal the f64 reference and a
//     bf16 result must equal it rounded once to bf16. Any missing, repeated or misplaced term fails.
//   - bounded: real values; |gpu - ref| <= (k + 2) u M (u = 2^-24, M = |alpha| |A||B| + |beta| |C|
//     elementwise: the forward-error bound of a k-term f32 sum in any order plus the epilogue's two
//     roundings), plus 2^-8 |ref| where C is bf16 (one rounding of the f32 value, gpu_compare.h).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../../runtime/src/backend.h"
#include "dtrn/runtime/ops.h"
#include "gpu_compare.h"

namespace dtrn {
namespace {

using gpu_testing::bits_of;
using gpu_testing::kBf16Rounding;
using gpu_testing::kGpu;
using gpu_testing::random_cpu;

constexpr double kF32Unit = 1.0 / (1 << 24);

struct Shape3 {
  int64_t m, n, k;
};

// Every class of skinny_gemm.cu for each transpose combination: small n (the dot kernel when A is not
// transposed, the column kernel when it is), small m (the reverse, on B), small k, and both m and n
// small. k runs from 1 to 20000 with lengths that are not multiples of a 16-byte chunk or of the column
// kernel's 128-row split; the router's shapes at R = 480 (the 360m preset's d_model / 2) are among them.
const std::vector<Shape3> kShapes = {
    {300, 2, 480}, {300, 1, 7},  {77, 8, 20000}, {300, 3, 1},  {2, 480, 16384}, {1, 301, 7},
    {8, 96, 20000}, {5, 300, 129}, {300, 480, 2},  {37, 45, 1},  {129, 77, 8},   {3, 5, 20000},
};

struct Types {
  DType ab, c;
};
const std::vector<Types> kTypes = {{DType::kF32, DType::kF32}, {DType::kBF16, DType::kBF16}, {DType::kBF16, DType::kF32}};

std::string describe(const Shape3& s, bool ta, bool tb, const Types& t, double alpha, double beta, int64_t offset) {
  return "m " + std::to_string(s.m) + " n " + std::to_string(s.n) + " k " + std::to_string(s.k) + " ta " +
         std::to_string(ta) + " tb " + std::to_string(tb) + " " + std::string(dtype_name(t.ab)) + " -> " + std::string(dtype_name(t.c)) +
         " alpha " + std::to_string(alpha) + " beta " + std::to_string(beta) + " offset " + std::to_string(offset);
}

// Integers in [-3, 3] (exact in bf16), as f64.
Tensor small_integers(const Shape& shape, uint64_t seed) {
  std::vector<double> v = random_cpu(shape, seed, DType::kF64, -3.5, 3.5).to_vector();
  for (double& e : v) e = std::nearbyint(e);
  return Tensor::from_vector(v, shape, DType::kF64);
}

Tensor abs_of(const Tensor& x) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e = std::fabs(e);
  return Tensor::from_vector(v, x.shape(), DType::kF64);
}

// x's values in `dtype` on the GPU, `offset` elements into a larger buffer (offset 1 breaks every
// 16-byte alignment, so the kernels take their scalar loads and stores).
Tensor on_gpu(const Tensor& x, DType dtype, int64_t offset) {
  if (offset == 0) return x.to(dtype).to(kGpu);
  std::vector<double> v(offset, 0.0);
  const std::vector<double> values = x.to_vector();
  v.insert(v.end(), values.begin(), values.end());
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, dtype, kGpu).narrow(0, offset, x.numel()).reshape(x.shape());
}

struct Outcome {
  std::vector<double> got, want, magnitude;
};

// C = alpha op(A) op(B) + beta C0 on the GPU (operands in t's dtypes, `offset` elements off alignment;
// C starts as NaN when beta is 0, which must not be read) and on the CPU in f64, and M when asked for.
// a, b and c0 are f64 holding values exact in t.ab and t.c.
Outcome run_gemm(const Shape3& s, bool ta, bool tb, const Types& t, double alpha, double beta, int64_t offset,
                 const Tensor& a, const Tensor& b, const Tensor& c0, bool with_magnitude) {
  GemmArgs g;
  g.m = s.m;
  g.n = s.n;
  g.k = s.k;
  g.trans_a = ta;
  g.trans_b = tb;
  g.alpha = alpha;
  g.beta = beta;
  const Tensor c_start = beta == 0 ? Tensor::full(c0.shape(), std::nan(""), DType::kF64) : c0;
  Tensor ga = on_gpu(a, t.ab, offset), gb = on_gpu(b, t.ab, offset), gc = on_gpu(c_start, t.c, offset);
  backend_for(kGpu).gemm(g, ga, gb, gc);

  Tensor want = beta == 0 ? Tensor::zeros(c0.shape(), DType::kF64) : c0.clone();
  backend_for(Device::cpu()).gemm(g, a, b, want);
  if (!with_magnitude) return {gc.to_vector(), want.to_vector(), {}};
  GemmArgs g_abs = g;
  g_abs.alpha = std::fabs(alpha);
  g_abs.beta = std::fabs(beta);
  Tensor magnitude = beta == 0 ? Tensor::zeros(c0.shape(), DType::kF64) : abs_of(c0);
  backend_for(Device::cpu()).gemm(g_abs, abs_of(a), abs_of(b), magnitude);
  return {gc.to_vector(), want.to_vector(), magnitude.to_vector()};
}

// Calls f(shape, ta, tb, a, b, c0) for every shape and transpose combination, with operands drawn by
// `draw` (f64 tensors whose values are exact in bf16).
template <typename Draw, typename F>
void for_each_product(Draw draw, F f) {
  uint64_t seed = 1;
  for (const Shape3& s : kShapes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const Tensor a = draw(ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, seed++);
        const Tensor b = draw(tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, seed++);
        const Tensor c0 = draw(Shape{s.m, s.n}, seed++);
        f(s, ta, tb, a, b, c0);
      }
    }
  }
}

TEST(CudaSkinnyGemm, ExactOnIntegersForEveryShapeTransposeDtypeAlphaBetaAndAlignment) {
  REQUIRE_GPU();
  for_each_product(small_integers, [](const Shape3& s, bool ta, bool tb, const Tensor& a, const Tensor& b,
                                      const Tensor& c0) {
    for (const Types& t : kTypes) {
      for (const auto& [alpha, beta] : std::vector<std::pair<double, double>>{{1.0, 0.0}, {0.5, 1.0}}) {
        for (int64_t offset : {0, 1}) {
          const std::string what = describe(s, ta, tb, t, alpha, beta, offset);
          const Outcome r = run_gemm(s, ta, tb, t, alpha, beta, offset, a, b, c0, false);
          // The exact value rounded once to C's dtype, as the CPU stores it.
          const std::vector<double> want =
              Tensor::from_vector(r.want, {static_cast<int64_t>(r.want.size())}, t.c).to_vector();
          int bad = 0;
          for (size_t i = 0; i < want.size() && bad < 3; ++i) {
            if (r.got[i] != want[i]) {
              ADD_FAILURE() << what << ": element " << i << ": gpu " << r.got[i] << " vs exact " << want[i];
              ++bad;
            }
          }
          if (bad > 0) return;
        }
      }
    }
  });
}

TEST(CudaSkinnyGemm, RealValuesWithinTheF32ErrorBound) {
  REQUIRE_GPU();
  const auto draw = [](const Shape& shape, uint64_t seed) {
    return random_cpu(shape, 1000 + seed, DType::kBF16).to(DType::kF64);
  };
  for_each_product(draw, [](const Shape3& s, bool ta, bool tb, const Tensor& a, const Tensor& b, const Tensor& c0) {
    for (const Types& t : kTypes) {
      for (const auto& [alpha, beta] : std::vector<std::pair<double, double>>{{1.0, 0.0}, {-0.7, 1.3}}) {
        const std::string what = describe(s, ta, tb, t, alpha, beta, 0);
        const Outcome r = run_gemm(s, ta, tb, t, alpha, beta, 0, a, b, c0, true);
        std::vector<double> tol(r.want.size());
        for (size_t i = 0; i < tol.size(); ++i) {
          tol[i] = (s.k + 2) * kF32Unit * r.magnitude[i] * (1 + kBf16Rounding) +
                   (t.c == DType::kBF16 ? kBf16Rounding * std::fabs(r.want[i]) : 0.0);
        }
        gpu_testing::expect_within(r.got, r.want, tol, what);
        if (::testing::Test::HasFailure()) return;
      }
    }
  });
}

// The router's three products at their training size (N = 2 x 8192 tokens, R = 480) twice from the
// same inputs: the same bits (the weight gradient's k = N sum is split over blocks and finished in a
// fixed order; nothing depends on scheduling).
TEST(CudaSkinnyGemm, RouterProductsAreBitReproducible) {
  REQUIRE_GPU();
  constexpr int64_t kN = 16384, kR = 480;
  const Tensor h = random_cpu({kN, kR}, 1, DType::kBF16).to(kGpu), w = random_cpu({2, kR}, 2, DType::kBF16).to(kGpu);
  const Tensor g = random_cpu({kN, 2}, 3, DType::kBF16).to(kGpu);
  const Tensor dw0 = random_cpu({2, kR}, 4, DType::kF32).to(kGpu);
  const auto run = [&] {
    GemmArgs wgrad;  // dW += g^T h into the f32 buffer
    wgrad.m = 2;
    wgrad.n = kR;
    wgrad.k = kN;
    wgrad.trans_a = true;
    wgrad.beta = 1.0;
    Tensor dw = dw0.clone();
    backend_for(kGpu).gemm(wgrad, g, h, dw);
    return std::vector<Tensor>{matmul(h, w, false, true), matmul(g, w), dw};
  };
  const std::vector<Tensor> first = run(), second = run();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(bits_of(first[i]), bits_of(second[i])) << "product " << i;
}

// linear(x, w2, b2) with the router's [2, R] weight, forward and two backwards (the weight's gradient
// accumulates: into its f32 buffer for bf16, beta = 1), on the GPU and in f64 on the CPU. Bounds as in
// the header, with M = |x||w| + |b| (forward), |g||w| (input gradient), the sum over both backwards of
// |g|^T |x| (weight gradient); a bf16 forward rounds twice (product, then the bias add): 2^-7 M.
TEST(CudaSkinnyGemm, RouterLinearForwardAndBackwardThroughTheOpLayer) {
  REQUIRE_GPU();
  constexpr int64_t kR = 480;
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    for (int64_t n : {int64_t{16384}, int64_t{999}}) {
      const std::string what = std::string(dtype_name(dtype)) + " N " + std::to_string(n);
      const Tensor x = random_cpu({n, kR}, 10, dtype), w = random_cpu({2, kR}, 11, dtype), b = random_cpu({2}, 12, dtype);
      const Tensor g1 = random_cpu({n, 2}, 13, dtype), g2 = random_cpu({n, 2}, 14, dtype);
      const auto run = [&](Device device, DType compute) {
        Tensor xl = x.to(compute).to(device).set_requires_grad(true);
        Tensor wl = w.to(compute).to(device).set_requires_grad(true);
        Tensor bl = b.to(compute).to(device).set_requires_grad(true);
        Tensor y = linear(xl, wl, bl);
        y.backward(g1.to(compute).to(device));
        const std::vector<double> dx1 = xl.grad().to_vector();
        linear(xl, wl, bl).backward(g2.to(compute).to(device));
        return std::vector<std::vector<double>>{y.to_vector(), dx1, wl.grad().to_vector()};
      };
      const auto got = run(kGpu, dtype), want = run(Device::cpu(), DType::kF64);
      const Tensor xa = abs_of(x), wa = abs_of(w);
      const std::vector<double> y_mag = add(matmul(xa, wa, false, true), abs_of(b)).to_vector();
      const std::vector<double> dx_mag = matmul(abs_of(g1), wa).to_vector();
      const std::vector<double> dw_mag =
          add(matmul(abs_of(g1), xa, true, false), matmul(abs_of(g2), xa, true, false)).to_vector();
      const double round = dtype == DType::kBF16 ? kBf16Rounding : 0.0;
      const auto bound = [](const std::vector<double>& mag, double scale) {
        std::vector<double> t(mag.size());
        for (size_t i = 0; i < t.size(); ++i) t[i] = scale * mag[i] + 1e-30;
        return t;
      };
      gpu_testing::expect_within(got[0], want[0], bound(y_mag, (kR + 2) * kF32Unit + 2 * round), what + " forward");
      gpu_testing::expect_within(got[1], want[1], bound(dx_mag, 4 * kF32Unit + round), what + " input gradient");
      gpu_testing::expect_within(got[2], want[2], bound(dw_mag, (2 * n + 2) * kF32Unit), what + " weight gradient");
    }
  }
}

}  // namespace
}  // namespace dtrn
