// CPU kernels for RMSNorm and rotary position embedding (backend.h: "Normalisation and position").
// RMSNorm keeps its per-row reciprocal RMS (rstd, in the kernel's statistics dtype: f64 for f64 x,
// else f32) for the backward; every reduction accumulates in double. Rows are independent and split
// across OpenMP threads; the weight gradient, a reduction over rows, is split by column blocks
// instead so that each element has one writer and a fixed summation order (bit-identical results
// run to run).
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {
namespace {

// Columns per task of the weight-gradient reduction: wide enough for contiguous inner loops, narrow
// enough that a model's C (hundreds to thousands) gives every thread work.
constexpr int64_t kColumnBlock = 64;
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelElements = 16384;

}  // namespace

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                         const Tensor& rstd) {
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(w.numel() == c && y.shape() == x.shape() && rstd.numel() == n,
              "rmsnorm: ", x.describe(), ", ", w.describe(), ", ", y.describe(), ", ",
              rstd.describe());
  dispatch_floating(x.dtype(), "rmsnorm", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* wp = w.data<T>();
    T* yp = y.data<T>();
    T* rp = rstd.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      const T* xr = xp + row * c;
      double squares = 0;
      for (int64_t i = 0; i < c; ++i) squares += static_cast<double>(xr[i]) * xr[i];
      const double r = 1.0 / std::sqrt(squares / static_cast<double>(c) + eps);
      rp[row] = static_cast<T>(r);
      for (int64_t i = 0; i < c; ++i) yp[row * c + i] = static_cast<T>(xr[i] * r * wp[i]);
    }
  });
}

// y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / C and
//   dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i),   dw_i = sum_rows dy_i x_i r.
void CpuBackend::rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& dy, const Tensor& dx, const Tensor& dw) {
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(w.numel() == c && dy.shape() == x.shape() && dx.shape() == x.shape() &&
                  dw.numel() == c && rstd.numel() == n,
              "rmsnorm_backward: ", x.describe(), ", ", dy.describe(), ", ", dx.describe());
  dispatch_floating(x.dtype(), "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* wp = w.data<T>();
    const T* rp = rstd.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
    T* dwp = dw.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      const T* xr = xp + row * c;
      const T* gr = gp + row * c;
      double dot = 0;
      for (int64_t i = 0; i < c; ++i) dot += static_cast<double>(gr[i]) * wp[i] * xr[i];
      const double r = rp[row];
      const double k = r * r * r * dot / static_cast<double>(c);
      for (int64_t i = 0; i < c; ++i) {
        dxp[row * c + i] = static_cast<T>(r * wp[i] * gr[i] - k * xr[i]);
      }
    }
    const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kColumnBlock, end = std::min(c, begin + kColumnBlock);
      double acc[kColumnBlock] = {};
      for (int64_t row = 0; row < n; ++row) {
        const double r = rp[row];
        for (int64_t i = begin; i < end; ++i) {
          acc[i - begin] += static_cast<double>(gp[row * c + i]) * xp[row * c + i] * r;
        }
      }
      for (int64_t i = begin; i < end; ++i) dwp[i] = static_cast<T>(acc[i - begin]);
    }
  });
}

// Rotate-half RoPE: for i < D/2 the pair (x_i, x_{i+D/2}) rotates by a_i = pos * theta^(-2i/D):
//   out_i = x_i cos a - x_{i+D/2} sin a,   out_{i+D/2} = x_{i+D/2} cos a + x_i sin a.
// A rotation's transpose is the rotation by -a, so the backward is this kernel with inverse = true.
// Angles are formed in double: pos * freq reaches ~1e5 radians at long contexts, beyond f32's
// precision.
void CpuBackend::rope(const Tensor& x, const Tensor& positions, double theta, bool inverse,
                      const Tensor& out) {
  const int64_t n = x.size(0), h = x.size(1), d = x.size(2), half = d / 2;
  DTRN_ASSERT(d % 2 == 0 && out.shape() == x.shape() && positions.numel() == n,
              "rope: ", x.describe(), ", ", positions.describe(), ", ", out.describe());
  std::vector<double> freq(half);
  for (int64_t i = 0; i < half; ++i) {
    freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  }
  const double sign = inverse ? -1.0 : 1.0;
  const DType pos_dtype = positions.dtype();
  const void* pos = positions.raw_data();
  dispatch_floating(x.dtype(), "rope", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* op = out.data<T>();
#pragma omp parallel for schedule(static) if (n * h * d > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      const double p = static_cast<double>(read_index(pos_dtype, pos, row));
      for (int64_t i = 0; i < half; ++i) {
        const double angle = p * freq[i];
        const double cs = std::cos(angle), sn = sign * std::sin(angle);
        for (int64_t head = 0; head < h; ++head) {
          const int64_t base = (row * h + head) * d;
          const double x1 = xp[base + i], x2 = xp[base + i + half];
          op[base + i] = static_cast<T>(x1 * cs - x2 * sn);
          op[base + i + half] = static_cast<T>(x2 * cs + x1 * sn);
        }
      }
    }
  });
}

}  // namespace dtrn
