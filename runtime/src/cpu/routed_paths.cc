// CPU kernels of combine_paths (ops.h): the reference for the CUDA ones. A row's dot product for dp is
// accumulated in double.
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {
namespace {

// Where a work row j of combine_paths comes from: j < R is routed[j], the others bypass[j - R].
struct PathRows {
  const int32_t* routed;
  const int32_t* bypass;
  int64_t r;
  int64_t token(int64_t j) const { return j < r ? routed[j] : bypass[j - r]; }
};

// The head geometry: y rows hold H*D values, v rows G*D; query head h reads KV head h / (H / G).
struct Heads {
  int64_t hd, gd, d, group;
  Heads(int64_t heads, int64_t hd_, int64_t gd_) : hd(hd_), gd(gd_), d(hd_ / heads), group(heads * d / gd_) {}
  int64_t kv_column(int64_t c) const { return (c / d / group) * d + c % d; }
};

// The work rows of routed [R] and bypass [N - R], checked to hold every token of 0..n-1 exactly once
// (otherwise rows of y would be left unwritten).
PathRows partition_rows(const Tensor& routed, const Tensor& bypass, int64_t n) {
  const PathRows rows{routed.data<int32_t>(), bypass.data<int32_t>(), routed.numel()};
  std::vector<bool> seen(n, false);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t t = rows.token(j);
    DTRN_CHECK(t >= 0 && t < n, "combine_paths: token ", t, " at work row ", j, " out of range [0, ", n, ")");
    DTRN_CHECK(!seen[t], "combine_paths: token ", t, " is both routed and bypassed, or listed twice");
    seen[t] = true;
  }
  return rows;
}

}  // namespace

void CpuBackend::combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                               const Tensor& bypass, int64_t heads, const Tensor& y) {
  const int64_t n = v.size(0);
  const PathRows rows = partition_rows(routed, bypass, n);
  const Heads g(heads, y.size(1), v.size(1));
  dispatch_floating(v.dtype(), "combine_paths", [&](auto tag) {
    using T = decltype(tag);
    const T *po = o.data<T>(), *pv = v.data<T>(), *pp = p.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (n * g.hd > 32768)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = rows.token(j);
      T* out = py + t * g.hd;
      if (j < rows.r) {
        for (int64_t c = 0; c < g.hd; ++c) out[c] = pp[t] * po[j * g.hd + c];
      } else {
        const T s = T(1) - pp[t];
        for (int64_t c = 0; c < g.hd; ++c) out[c] = s * pv[t * g.gd + g.kv_column(c)];
      }
    }
  });
}

void CpuBackend::combine_paths_backward(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                                        const Tensor& bypass, int64_t heads, const Tensor& dy, const Tensor& d_o,
                                        const Tensor& dv, const Tensor& dp) {
  const int64_t n = v.size(0);
  const PathRows rows = partition_rows(routed, bypass, n);
  const Heads g(heads, dy.size(1), v.size(1));
  dispatch_floating(v.dtype(), "combine_paths_backward", [&](auto tag) {
    using T = decltype(tag);
    const T *po = o.data<T>(), *pv = v.data<T>(), *pp = p.data<T>(), *pdy = dy.data<T>();
    T *pdo = d_o.data<T>(), *pdv = dv.data<T>(), *pdp = dp.data<T>();
#pragma omp parallel for if (n * g.hd > 32768)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = rows.token(j);
      const T* up = pdy + t * g.hd;
      T* dvt = pdv + t * g.gd;
      double dot = 0;
      if (j < rows.r) {
        for (int64_t c = 0; c < g.hd; ++c) {
          pdo[j * g.hd + c] = pp[t] * up[c];
          dot += static_cast<double>(up[c]) * po[j * g.hd + c];
        }
        for (int64_t e = 0; e < g.gd; ++e) dvt[e] = T(0);
        pdp[t] = static_cast<T>(dot);
      } else {
        const T s = T(1) - pp[t];
        for (int64_t e = 0; e < g.gd; ++e) {
          const int64_t kv = e / g.d, col = e % g.d;
          T sum = 0;
          for (int64_t k = 0; k < g.group; ++k) sum += up[(kv * g.group + k) * g.d + col];
          dvt[e] = s * sum;
          dot += static_cast<double>(sum) * pv[t * g.gd + e];
        }
        pdp[t] = static_cast<T>(-dot);
      }
    }
  });
}

}  // namespace dtrn
