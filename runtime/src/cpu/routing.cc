// CPU token routing (backend.h, routing.h): the executable specification of the CUDA kernels in
// cuda/routing.cu.
#include <algorithm>
#include <numeric>
#include <vector>

#include "cpu/cpu_backend.h"
#include "rng_philox.h"

namespace dtrn {

void CpuBackend::route_threshold(const Tensor& p, double threshold, const Tensor& mask) {
  const float* pp = p.data<float>();
  int32_t* pm = mask.data<int32_t>();
  const float t = static_cast<float>(threshold);
  for (int64_t i = 0; i < p.numel(); ++i) pm[i] = pp[i] > t ? 1 : 0;
}

void CpuBackend::route_fallback(const Tensor& mask, int64_t want, uint64_t seed, uint64_t stream,
                                uint64_t offset) {
  const int64_t n = mask.numel();
  int32_t* pm = mask.data<int32_t>();
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (int64_t i = 0; i < want; ++i) {
    const int64_t j = i + static_cast<int64_t>(philox_below(seed, stream, offset + 2 * i, n - i));
    std::swap(order[i], order[j]);
    pm[order[i]] = 1;
  }
}

void CpuBackend::route_compact(const Tensor& mask, int64_t rows, int64_t cols, const Tensor& routed,
                               const Tensor& positions, const Tensor& bypass, const Tensor& cu_seqlens,
                               const Tensor& count) {
  const int32_t* pm = mask.data<int32_t>();
  int32_t* pr = routed.data<int32_t>();
  int32_t* pp = positions.data<int32_t>();
  int32_t* pb = bypass.data<int32_t>();
  int32_t* pc = cu_seqlens.data<int32_t>();
  int32_t nr = 0, nb = 0;
  for (int64_t r = 0; r < rows; ++r) {
    pc[r] = nr;
    for (int64_t j = 0; j < cols; ++j) {
      const int32_t i = static_cast<int32_t>(r * cols + j);
      if (pm[i]) {
        pr[nr] = i;
        pp[nr++] = static_cast<int32_t>(j);
      } else {
        pb[nb++] = i;
      }
    }
  }
  pc[rows] = nr;
  count.data<int32_t>()[0] = nr;
}

void CpuBackend::sort_values(const Tensor& keys, const Tensor& sorted, const Tensor& order) {
  const int64_t n = keys.numel();
  const float* pk = keys.data<float>();
  int32_t* po = order.data<int32_t>();
  std::iota(po, po + n, 0);
  // By value, stable; -0.0 and +0.0 are equal (and keep their order), as in CUB's radix sort, which
  // the CUDA backend uses (measured on an H200: it kept +0.0 before a later -0.0).
  std::stable_sort(po, po + n, [pk](int32_t a, int32_t b) { return pk[a] < pk[b]; });
  float* ps = sorted.data<float>();
  for (int64_t i = 0; i < n; ++i) ps[i] = pk[po[i]];
}

}  // namespace dtrn
