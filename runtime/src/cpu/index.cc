// CPU gathers and scatters along one dimension of an [outer, n, inner] view. Indices are validated before
// the parallel loops (an exception must not leave an OpenMP region).
#include <algorithm>
#include <cstring>

#include "cpu/cpu_backend.h"
#include "cpu/dispatch.h"

namespace dtrn {
namespace {

void check_indices(const char* op, const Tensor& index, int64_t n) {
  const void* pi = index.raw_data();
  for (int64_t j = 0; j < index.numel(); ++j) {
    const int64_t i = read_index(index.dtype(), pi, j);
    DTRN_CHECK(i >= 0 && i < n, op, ": index ", i, " at position ", j, " out of range [0, ", n, ")");
  }
}

}  // namespace

void CpuBackend::index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                              const Tensor& index, const Tensor& out) {
  check_indices("index_select", index, n);
  const int64_t m = index.numel();
  const size_t row_bytes = inner * dtype_size(x.dtype());
  const char* px = static_cast<const char*>(x.raw_data());
  char* po = static_cast<char*>(out.raw_data());
  const void* pi = index.raw_data();
  const DType it = index.dtype();
#pragma omp parallel for collapse(2) if (outer * m * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < m; ++j) {
      const int64_t src = read_index(it, pi, j);
      std::memcpy(po + (o * m + j) * row_bytes, px + (o * n + src) * row_bytes, row_bytes);
    }
  }
}

void CpuBackend::index_add(const Tensor& out, int64_t outer, int64_t n, int64_t inner,
                           const Tensor& index, const Tensor& src) {
  check_indices("index_add", index, n);
  const int64_t m = index.numel();
  const void* pi = index.raw_data();
  const DType it = index.dtype();
  dispatch_floating(out.dtype(), "index_add", [&](auto tag) {
    using T = decltype(tag);
    T* po = out.data<T>();
    const T* ps = src.data<T>();
    // Threads own disjoint blocks of channels, so repeated indices never race; rows stay sequential.
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for collapse(2) if (outer * inner * m > 32768)
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t c0 = blk * kBlock, c1 = std::min(inner, c0 + kBlock);
        for (int64_t j = 0; j < m; ++j) {
          T* dst = po + (o * n + read_index(it, pi, j)) * inner;
          const T* s = ps + (o * m + j) * inner;
          for (int64_t c = c0; c < c1; ++c) dst[c] += s[c];
        }
      }
    }
  });
}

void CpuBackend::index_copy(const Tensor& out, int64_t outer, int64_t n, int64_t inner,
                            const Tensor& index, const Tensor& src) {
  check_indices("index_copy", index, n);
  const int64_t m = index.numel();
  const size_t row_bytes = inner * dtype_size(out.dtype());
  char* po = static_cast<char*>(out.raw_data());
  const char* ps = static_cast<const char*>(src.raw_data());
  const void* pi = index.raw_data();
  const DType it = index.dtype();
#pragma omp parallel for collapse(2) if (outer * m * inner > 32768)
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < m; ++j) {
      std::memcpy(po + (o * n + read_index(it, pi, j)) * row_bytes, ps + (o * m + j) * row_bytes, row_bytes);
    }
  }
}

}  // namespace dtrn
