// CPU kernels for packed variable-length causal attention with grouped KV heads (ops.h: attention).
// The plain reference every faster backend is tested against: for each sequence s, query head h and
// query row i, the scores scale * q_i . k_j over the rows j <= i of s, a stable softmax, and the
// weighted sum of v_j; each row's log-sum-exp (lse [H, N]) is kept so the backward rebuilds the
// probabilities without another reduction. All sums accumulate in double.
//
// Parallelism: the forward splits (sequence, query head) pairs across OpenMP threads. The backward
// splits (sequence, KV head) pairs, because the H / G query heads sharing a KV head all add into
// its dk and dv: one task per KV head owns those rows outright (no atomics, a fixed summation
// order) and also owns the dq rows of its query heads. Dynamic scheduling, since sequence lengths
// differ.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {
namespace {

// Below this many q elements a parallel region costs more than it saves (the work per element grows
// with the sequence length, so the bar is lower than for row-wise kernels).
constexpr int64_t kParallelElements = 4096;

template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& cu_seqlens, double scale, const Tensor& out,
                           const Tensor& lse) {
  const int64_t n = q.size(0), h = q.size(1), d = q.size(2), g = k.size(1);
  const int64_t s = cu_seqlens.numel() - 1;
  DTRN_ASSERT(k.shape() == v.shape() && k.size(0) == n && k.size(2) == d && h % g == 0 &&
                  out.shape() == q.shape() && lse.numel() == h * n,
              "attention: q ", q.describe(), ", k ", k.describe(), ", v ", v.describe(), ", out ",
              out.describe(), ", lse ", lse.describe());
  const int32_t* cu = cu_seqlens.data<int32_t>();
  const int64_t group = h / g;
  dispatch_floating(q.dtype(), "attention", [&](auto zero) {
    using T = decltype(zero);
    const T* qp = q.data<T>();
    const T* kp = k.data<T>();
    const T* vp = v.data<T>();
    T* op = out.data<T>();
    T* lp = lse.data<T>();
#pragma omp parallel for schedule(dynamic) if (n * h * d > kParallelElements)
    for (int64_t task = 0; task < s * h; ++task) {
      const int64_t seq = task / h, head = task % h, kv = head / group;
      const int64_t start = cu[seq], len = cu[seq + 1] - start;
      std::vector<double> p(len), acc(d);
      for (int64_t i = 0; i < len; ++i) {
        const T* qi = qp + ((start + i) * h + head) * d;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = scale * dot(qi, kp + ((start + j) * g + kv) * d, d);
          m = std::max(m, p[j]);
        }
        double l = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j <= i; ++j) {
          const double e = std::exp(p[j] - m);
          l += e;
          const T* vj = vp + ((start + j) * g + kv) * d;
          for (int64_t c = 0; c < d; ++c) acc[c] += e * vj[c];
        }
        T* oi = op + ((start + i) * h + head) * d;
        for (int64_t c = 0; c < d; ++c) oi[c] = static_cast<T>(acc[c] / l);
        lp[head * n + start + i] = static_cast<T>(m + std::log(l));
      }
    }
  });
}

// With P_ij = exp(scale q_i . k_j - lse_i) and O_i = sum_j P_ij v_j:
//   dP_ij = dO_i . v_j,   dS_ij = P_ij (dP_ij - dO_i . O_i)   (softmax backward; sum_j P_ij dP_ij =
//   dO_i . O_i), dq_i = scale sum_j dS_ij k_j,   dk_j = scale sum_i dS_ij q_i,   dv_j = sum_i P_ij
//   dO_i,
// with dk and dv summed over the query heads that share the KV head.
void CpuBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& cu_seqlens, double scale, const Tensor& out,
                                    const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                    const Tensor& dk, const Tensor& dv) {
  const int64_t n = q.size(0), h = q.size(1), d = q.size(2), g = k.size(1);
  const int64_t s = cu_seqlens.numel() - 1;
  DTRN_ASSERT(k.shape() == v.shape() && k.size(0) == n && k.size(2) == d && h % g == 0 &&
                  out.shape() == q.shape() && dout.shape() == q.shape() &&
                  dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() &&
                  lse.numel() == h * n,
              "attention_backward: q ", q.describe(), ", k ", k.describe(), ", dout ",
              dout.describe(), ", lse ", lse.describe());
  const int32_t* cu = cu_seqlens.data<int32_t>();
  const int64_t group = h / g;
  dispatch_floating(q.dtype(), "attention_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* qp = q.data<T>();
    const T* kp = k.data<T>();
    const T* vp = v.data<T>();
    const T* op = out.data<T>();
    const T* lp = lse.data<T>();
    const T* gp = dout.data<T>();
    T* dqp = dq.data<T>();
    T* dkp = dk.data<T>();
    T* dvp = dv.data<T>();
#pragma omp parallel for schedule(dynamic) if (n * h * d > kParallelElements)
    for (int64_t task = 0; task < s * g; ++task) {
      const int64_t seq = task / g, kv = task % g;
      const int64_t start = cu[seq], len = cu[seq + 1] - start;
      std::vector<double> dk_acc(len * d, 0.0), dv_acc(len * d, 0.0), dq_acc(d);
      for (int64_t head = kv * group; head < (kv + 1) * group; ++head) {
        for (int64_t i = 0; i < len; ++i) {
          const int64_t qrow = ((start + i) * h + head) * d;
          const T* qi = qp + qrow;
          const T* gi = gp + qrow;
          const double row_lse = lp[head * n + start + i];
          const double delta = dot(gi, op + qrow, d);
          std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
          for (int64_t j = 0; j <= i; ++j) {
            const T* kj = kp + ((start + j) * g + kv) * d;
            const T* vj = vp + ((start + j) * g + kv) * d;
            const double p = std::exp(scale * dot(qi, kj, d) - row_lse);
            const double ds = p * (dot(gi, vj, d) - delta);
            double* dkj = dk_acc.data() + j * d;
            double* dvj = dv_acc.data() + j * d;
            for (int64_t c = 0; c < d; ++c) {
              dq_acc[c] += scale * ds * kj[c];
              dkj[c] += scale * ds * qi[c];
              dvj[c] += p * gi[c];
            }
          }
          for (int64_t c = 0; c < d; ++c) dqp[qrow + c] = static_cast<T>(dq_acc[c]);
        }
      }
      for (int64_t j = 0; j < len; ++j) {
        const int64_t kvrow = ((start + j) * g + kv) * d;
        for (int64_t c = 0; c < d; ++c) {
          dkp[kvrow + c] = static_cast<T>(dk_acc[j * d + c]);
          dvp[kvrow + c] = static_cast<T>(dv_acc[j * d + c]);
        }
      }
    }
  });
}

}  // namespace dtrn
