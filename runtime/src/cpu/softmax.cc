// CPU kernels for softmax over the last dimension and for cross-entropy (backend.h: "Softmax",
// "Cross-entropy"). Both are stable (the row maximum is subtracted before exponentiating) and
// accumulate row sums in double. Rows are independent and split across OpenMP threads.
// Cross-entropy keeps each kept row's log-sum-exp so that its backward rebuilds softmax without
// another reduction. Target values were checked by the op layer (each is ignore_index or in [0,
// num_classes)).
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelElements = 16384;

// log(sum_i exp(row[i])) over row[0..n), stable for any magnitudes; -inf for an empty row.
template <typename T>
double log_sum_exp(const T* row, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(row[i]));
  if (n == 0 || std::isinf(m)) return m;
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(row[i]) - m);
  return m + std::log(s);
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, const Tensor& y) {
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(y.shape() == x.shape(), "softmax: ", x.describe(), " -> ", y.describe());
  dispatch_floating(x.dtype(), "softmax", [&](auto zero) {
    using T = decltype(zero);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      const double lse = log_sum_exp(xp + row * c, c);
      for (int64_t i = 0; i < c; ++i) {
        yp[row * c + i] = static_cast<T>(std::exp(static_cast<double>(xp[row * c + i]) - lse));
      }
    }
  });
}

// dx_i = y_i (dy_i - sum_j dy_j y_j): the Jacobian diag(y) - y y^T applied to dy.
void CpuBackend::softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) {
  const int64_t n = y.size(0), c = y.size(1);
  DTRN_ASSERT(dy.shape() == y.shape() && dx.shape() == y.shape(),
              "softmax_backward: ", y.describe(), ", ", dy.describe(), ", ", dx.describe());
  dispatch_floating(y.dtype(), "softmax_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* yp = y.data<T>();
    const T* gp = dy.data<T>();
    T* dxp = dx.data<T>();
#pragma omp parallel for schedule(static) if (n * c > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      double dot = 0;
      for (int64_t i = 0; i < c; ++i) dot += static_cast<double>(gp[row * c + i]) * yp[row * c + i];
      for (int64_t i = 0; i < c; ++i) {
        dxp[row * c + i] = static_cast<T>(yp[row * c + i] * (gp[row * c + i] - dot));
      }
    }
  });
}

namespace {

// One kept row's gradient coef * (softmax - onehot) over its classes, 0 over the padding. drow may be
// row itself: element i is read before it is written.
template <typename T>
void cross_entropy_gradient_row(const T* row, T* drow, int64_t v, int64_t num_classes, int64_t t,
                                double lse, double coef) {
  for (int64_t i = 0; i < num_classes; ++i) {
    const double p = std::exp(static_cast<double>(row[i]) - lse);
    drow[i] = static_cast<T>(coef * (p - (i == t ? 1.0 : 0.0)));
  }
  std::fill(drow + num_classes, drow + v, T(0));
}

void check_cross_entropy(const char* kernel, const Tensor& logits, const Tensor& targets,
                         int64_t num_classes, const Tensor& lse) {
  const int64_t n = logits.size(0), v = logits.size(1);
  DTRN_ASSERT(num_classes > 0 && num_classes <= v && targets.numel() == n && lse.numel() == n,
              kernel, ": ", logits.describe(), ", ", targets.describe(), ", ", lse.describe(),
              ", num_classes ", num_classes);
}

}  // namespace

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               int64_t num_classes, const Tensor& losses, const Tensor& lse) {
  check_cross_entropy("cross_entropy", logits, targets, num_classes, lse);
  DTRN_ASSERT(losses.numel() == logits.size(0), "cross_entropy: losses ", losses.describe());
  const int64_t n = logits.size(0), v = logits.size(1);
  const DType target_dtype = targets.dtype();
  const void* tp = targets.raw_data();
  dispatch_floating(logits.dtype(), "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    const T* lp = logits.data<T>();
    T* loss = losses.data<T>();
    T* lsep = lse.data<T>();
#pragma omp parallel for schedule(static) if (n * v > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      const int64_t t = read_index(target_dtype, tp, row);
      if (t == ignore_index) {
        loss[row] = 0;
        lsep[row] = 0;
        continue;
      }
      const double l = log_sum_exp(lp + row * v, num_classes);
      lsep[row] = static_cast<T>(l);
      loss[row] = static_cast<T>(l - static_cast<double>(lp[row * v + t]));
    }
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets,
                                        int64_t ignore_index, int64_t num_classes,
                                        const Tensor& lse, const Tensor& grad, double scale,
                                        const Tensor& dlogits) {
  check_cross_entropy("cross_entropy_backward", logits, targets, num_classes, lse);
  DTRN_ASSERT(dlogits.shape() == logits.shape() && grad.numel() == 1 &&
                  (grad.dtype() == DType::kF32 || grad.dtype() == DType::kF64),
              "cross_entropy_backward: ", dlogits.describe(), ", grad ", grad.describe());
  const int64_t n = logits.size(0), v = logits.size(1);
  const double upstream = grad.dtype() == DType::kF64 ? *grad.data<double>() : *grad.data<float>();
  const double coef = upstream * scale;
  const DType target_dtype = targets.dtype();
  const void* tp = targets.raw_data();
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* lp = logits.data<T>();
    const T* lsep = lse.data<T>();
    T* dp = dlogits.data<T>();
#pragma omp parallel for schedule(static) if (n * v > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      T* drow = dp + row * v;
      const int64_t t = read_index(target_dtype, tp, row);
      if (t == ignore_index) {
        std::fill(drow, drow + v, T(0));
        continue;
      }
      cross_entropy_gradient_row(lp + row * v, drow, v, num_classes, t,
                                 static_cast<double>(lsep[row]), coef);
    }
  });
}

void CpuBackend::cross_entropy_fused(const Tensor& logits, const Tensor& targets,
                                     int64_t ignore_index, int64_t num_classes, double scale,
                                     const Tensor& losses, const Tensor& lse,
                                     const Tensor& dlogits) {
  check_cross_entropy("cross_entropy_fused", logits, targets, num_classes, lse);
  DTRN_ASSERT(losses.numel() == logits.size(0) && dlogits.shape() == logits.shape(),
              "cross_entropy_fused: ", losses.describe(), ", ", dlogits.describe());
  const int64_t n = logits.size(0), v = logits.size(1);
  const DType target_dtype = targets.dtype();
  const void* tp = targets.raw_data();
  dispatch_floating(logits.dtype(), "cross_entropy_fused", [&](auto zero) {
    using T = decltype(zero);
    const T* lp = logits.data<T>();
    T* loss = losses.data<T>();
    T* lsep = lse.data<T>();
    T* dp = dlogits.data<T>();
#pragma omp parallel for schedule(static) if (n * v > kParallelElements)
    for (int64_t row = 0; row < n; ++row) {
      T* drow = dp + row * v;
      const int64_t t = read_index(target_dtype, tp, row);
      if (t == ignore_index) {
        loss[row] = 0;
        lsep[row] = 0;
        std::fill(drow, drow + v, T(0));
        continue;
      }
      const T* xrow = lp + row * v;
      const double l = log_sum_exp(xrow, num_classes);
      lsep[row] = static_cast<T>(l);
      loss[row] = static_cast<T>(l - static_cast<double>(xrow[t]));
      cross_entropy_gradient_row(xrow, drow, v, num_classes, t, l, scale);
    }
  });
}

}  // namespace dtrn
