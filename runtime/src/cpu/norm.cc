// CPU kernels for RMSNorm and rotary position embedding (backend.h: "Normalisation and position").
// RMSNorm keeps its per-row reciprocal RMS (rstd, in the kernel's statistics dtype: f64 for f64 x,
// else f32) for the backward; every reduction accumulates in double. The residual add fused with
// the norm (add_rmsnorm) runs the same row functions on the sum it stores, so that it rounds as add
// then rmsnorm do. Rows are independent and split across OpenMP threads; the weight gradient, a
// reduction over rows, is split by column blocks instead so that each element has one writer and a
// fixed summation order (bit-identical results run to run).
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

// One row of RMSNorm: y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), returned. The plain and the
// fused-add kernels share it, so that they round identically.
template <typename T>
double rmsnorm_row(const T* x, const T* w, int64_t c, double eps, T* y) {
  double squares = 0;
  for (int64_t i = 0; i < c; ++i) squares += static_cast<double>(x[i]) * x[i];
  const double r = 1.0 / std::sqrt(squares / static_cast<double>(c) + eps);
  for (int64_t i = 0; i < c; ++i) y[i] = static_cast<T>(x[i] * r * w[i]);
  return r;
}

// y_i = x_i r w_i with r = (mean(x^2) + eps)^(-1/2), so dr/dx_j = -r^3 x_j / C and
//   dx_j = r w_j dy_j - (r^3 / C) x_j sum_i(dy_i w_i x_i),   dw_i = sum_rows dy_i x_i r.
// One row's dx_j, rounded to T, is handed to store(j, dx_j).
template <typename T, typename Store>
void rmsnorm_dx_row(const T* x, const T* w, const T* dy, double r, int64_t c, Store&& store) {
  double dot = 0;
  for (int64_t i = 0; i < c; ++i) dot += static_cast<double>(dy[i]) * w[i] * x[i];
  const double k = r * r * r * dot / static_cast<double>(c);
  for (int64_t i = 0; i < c; ++i) store(i, static_cast<T>(r * w[i] * dy[i] - k * x[i]));
}

// dw_i = sum over rows of dy_i x_i r, a task per block of columns (one writer per element, rows in
// order).
template <typename T>
void rmsnorm_dw(const T* x, const T* rstd, const T* dy, int64_t n, int64_t c, T* dw) {
  const int64_t blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kColumnBlock, end = std::min(c, begin + kColumnBlock);
    double acc[kColumnBlock] = {};
    for (int64_t row = 0; row < n; ++row) {
      const double r = rstd[row];
      for (int64_t i = begin; i < end; ++i) {
        acc[i - begin] += static_cast<double>(dy[row * c + i]) * x[row * c + i] * r;
      }
    }
    for (int64_t i = begin; i < end; ++i) dw[i] = static_cast<T>(acc[i - begin]);
  }
}

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
      rp[row] = static_cast<T>(rmsnorm_row(xp + row * c, wp, c, eps, yp + row * c));
    }
  });
}

void CpuBackend::rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& dy, const Tensor& dx, const Tensor& dw) {
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(w.numel() == c && dy.shape() == x.shape() && dx.shape() == x.shape() &&
                  dw.numel() == c && rstd.numel() == n,
              "rmsnorm_backward: ", x.describe(), ", ", dy.describe(), ", ", dx.describe());
  dispatch_floating(x.dtype(), "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* rp = rstd.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      T* out = dxp + row * c;
      rmsnorm_dx_row(xp + row * c, w.data<T>(), gp + row * c, rp[row], c,
                     [out](int64_t i, T v) { out[i] = v; });
    }
    rmsnorm_dw(xp, rp, gp, n, c, dw.data<T>());
  });
}

// h = x + delta in T, as binary(kAdd) computes it, then the norm of the stored (rounded) h.
void CpuBackend::add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& w, double eps,
                             const Tensor& h, const Tensor& y, const Tensor& rstd) {
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(delta.shape() == x.shape() && w.numel() == c && h.shape() == x.shape() &&
                  y.shape() == x.shape() && rstd.numel() == n,
              "add_rmsnorm: ", x.describe(), ", ", delta.describe(), ", ", w.describe(), " -> ",
              h.describe(), ", ", y.describe(), ", ", rstd.describe());
  dispatch_floating(x.dtype(), "add_rmsnorm", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    const T* dp = delta.data<T>();
    T* hp = h.data<T>();
    T* yp = y.data<T>();
    T* rp = rstd.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      T* hr = hp + row * c;
      for (int64_t i = 0; i < c; ++i) hr[i] = xp[row * c + i] + dp[row * c + i];
      rp[row] = static_cast<T>(rmsnorm_row(hr, w.data<T>(), c, eps, yp + row * c));
    }
  });
}

// dx = dh + (the norm's dx rounded to T), the sum in T as binary(kAdd) computes it.
void CpuBackend::add_rmsnorm_backward(const Tensor& h, const Tensor& w, const Tensor& rstd,
                                      const Tensor& dy, const Tensor& dh, const Tensor& dx,
                                      const Tensor& dw) {
  const int64_t n = h.size(0), c = h.size(1);
  DTRN_ASSERT(w.numel() == c && dy.shape() == h.shape() && dh.shape() == h.shape() &&
                  dx.shape() == h.shape() && dw.numel() == c && rstd.numel() == n,
              "add_rmsnorm_backward: ", h.describe(), ", ", dy.describe(), ", ", dh.describe(),
              " -> ", dx.describe());
  dispatch_floating(h.dtype(), "add_rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* hp = h.data<T>();
    const T* rp = rstd.data<T>();
    const T* gp = dy.data<T>();
    const T* dhp = dh.data<T>();
    T* dxp = dx.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      T* out = dxp + row * c;
      const T* residual = dhp + row * c;
      rmsnorm_dx_row(hp + row * c, w.data<T>(), gp + row * c, rp[row], c,
                     [out, residual](int64_t i, T v) { out[i] = residual[i] + v; });
    }
    rmsnorm_dw(hp, rp, gp, n, c, dw.data<T>());
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
