// StridedIter<N>: the geometry of N operands walked over one common shape, each with its own element
// strides (0 where broadcast). Passed by value to kernels, which turn a linear element index into N
// element offsets. Host code builds it and calls collapse() first: merging dimensions that are
// contiguous in every operand makes most copies and broadcasts one- or two-dimensional, which saves
// the per-dimension divisions in the kernel.
//
// C++17 and CUDA-header free, so both nvcc (.cu) and the host compiler (.cc) include it.
#pragma once

#include <cstdint>

#include "host_device.h"

namespace dtrn::cuda {

constexpr int kMaxDims = 8;

template <int N>
struct StridedIter {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  // Drops size-1 dimensions and merges dimension d into d+1 where every operand has
  // stride[d] == stride[d+1] * shape[d+1]. The element order is unchanged.
  void collapse() {
    int out = 0;
    for (int d = 0; d < ndim; ++d) {
      if (shape[d] == 1) continue;
      if (out > 0 && mergeable(out - 1, d)) {
        // The merged dimension keeps the inner stride and multiplies the extent.
        shape[out - 1] *= shape[d];
        for (int i = 0; i < N; ++i) strides[i][out - 1] = strides[i][d];
        continue;
      }
      shape[out] = shape[d];
      for (int i = 0; i < N; ++i) strides[i][out] = strides[i][d];
      ++out;
    }
    ndim = out;
  }

  // True when operand i is dense in element order after collapse() (an empty shape is one element).
  bool contiguous(int i) const { return ndim == 0 || (ndim == 1 && strides[i][0] == 1); }

  // Element offsets of linear index `linear` (row-major over shape) for every operand.
  DTRN_HOST_DEVICE void offsets(int64_t linear, int64_t (&off)[N]) const {
    for (int i = 0; i < N; ++i) off[i] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t extent = shape[d];
      const int64_t idx = linear % extent;
      linear /= extent;
      for (int i = 0; i < N; ++i) off[i] += idx * strides[i][d];
    }
  }

 private:
  bool mergeable(int outer, int inner) const {
    for (int i = 0; i < N; ++i) {
      if (strides[i][outer] != strides[i][inner] * shape[inner]) return false;
    }
    return true;
  }
};

}  // namespace dtrn::cuda
