// Iteration over strided views for CPU kernels: visits every element of `shape` in C order, passing the
// element offsets of each operand, split into contiguous chunks across OpenMP threads.
#pragma once

#include <omp.h>

#include <array>
#include <cstdint>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

// fn(std::array<int64_t, K> offsets) for each element; strides[k] are operand k's strides (in elements).
template <size_t K, typename Fn>
void for_each_strided(const Shape& shape, const std::array<const Shape*, K>& strides, Fn&& fn) {
  const int64_t n = shape_numel(shape);
  const int nd = static_cast<int>(shape.size());
  const int threads = n >= 32768 ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    std::vector<int64_t> idx(nd, 0);
    std::array<int64_t, K> off{};
    int64_t rest = begin;
    for (int d = nd - 1; d >= 0; --d) {
      idx[d] = shape[d] ? rest % shape[d] : 0;
      rest = shape[d] ? rest / shape[d] : 0;
      for (size_t k = 0; k < K; ++k) off[k] += idx[d] * (*strides[k])[d];
    }
    for (int64_t i = begin; i < end; ++i) {
      fn(off);
      for (int d = nd - 1; d >= 0; --d) {
        if (++idx[d] < shape[d]) {
          for (size_t k = 0; k < K; ++k) off[k] += (*strides[k])[d];
          break;
        }
        for (size_t k = 0; k < K; ++k) off[k] -= (*strides[k])[d] * (shape[d] - 1);
        idx[d] = 0;
      }
    }
  }
}

}  // namespace dtrn
