// CPU memory: the aligned host allocator, fill, strided converting copy, and random fills.
#include "cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu/dispatch.h"
#include "dtrn/runtime/rng.h"

namespace dtrn {
namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    // 64-byte alignment: a cache line, and enough for any vector load.
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
};

// Reads element i (C order over `shape`) of a strided tensor as double / writes one.
template <typename Fn>
void for_each_strided_index(const Shape& shape, const Shape& strides_a, const Shape& strides_b,
                            Fn&& fn) {
  const int64_t n = shape_numel(shape);
  const size_t nd = shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t oa = 0, ob = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(oa, ob);
    for (size_t d = nd; d-- > 0;) {
      if (++idx[d] < shape[d]) {
        oa += strides_a[d];
        ob += strides_b[d];
        break;
      }
      oa -= strides_a[d] * (shape[d] - 1);
      ob -= strides_b[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

double load(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::kF64: return static_cast<const double*>(base)[i];
    case DType::kF32: return static_cast<const float*>(base)[i];
    case DType::kBF16: return static_cast<float>(static_cast<const BFloat16*>(base)[i]);
    case DType::kI32: return static_cast<const int32_t*>(base)[i];
    case DType::kI64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
  }
  return 0;
}

void store(DType t, void* base, int64_t i, double v) {
  switch (t) {
    case DType::kF64: static_cast<double*>(base)[i] = v; break;
    // Round through float first so f64 -> bf16 equals f64 -> f32 -> bf16 (what every GPU path does).
    case DType::kF32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::kBF16: static_cast<BFloat16*>(base)[i] = BFloat16(static_cast<float>(v)); break;
    case DType::kI32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::kI64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
  }
}

}  // namespace

CpuBackend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

Allocator& CpuBackend::allocator() {
  static CpuAllocator allocator;
  return allocator;
}

void CpuBackend::fill(const Tensor& out, double value) {
  DTRN_ASSERT(out.is_contiguous(), "fill needs a contiguous tensor");
  const int64_t n = out.numel();
  void* p = out.raw_data();
  if (out.dtype() == DType::kF32) {
    std::fill_n(static_cast<float*>(p), n, static_cast<float>(value));
  } else {
    for (int64_t i = 0; i < n; ++i) store(out.dtype(), p, i, value);
  }
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  DTRN_ASSERT(src.shape() == dst.shape(), "copy shapes differ");
  const DType st = src.dtype(), dt = dst.dtype();
  const void* s = src.raw_data();
  void* d = dst.raw_data();
  if (st == dt && src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(d, s, dst.nbytes());
    return;
  }
  if (st == DType::kI64 && dt == DType::kI64) {
    // Integers above 2^53 must not pass through double.
    for_each_strided_index(src.shape(), src.strides(), dst.strides(), [&](int64_t a, int64_t b) {
      static_cast<int64_t*>(d)[b] = static_cast<const int64_t*>(s)[a];
    });
    return;
  }
  for_each_strided_index(src.shape(), src.strides(), dst.strides(),
                         [&](int64_t a, int64_t b) { store(dt, d, b, load(st, s, a)); });
}

void CpuBackend::copy_from_host(void* dst, const void* src, size_t nbytes) {
  std::memcpy(dst, src, nbytes);
}
void CpuBackend::copy_to_host(void* dst, const void* src, size_t nbytes) {
  std::memcpy(dst, src, nbytes);
}

void CpuBackend::fill_random(const Tensor& out, bool normal, double a, double b, uint64_t seed,
                             uint64_t stream, uint64_t offset) {
  DTRN_ASSERT(out.is_contiguous(), "fill_random needs a contiguous tensor");
  DTRN_CHECK(is_floating(out.dtype()), "random fill of a ", dtype_name(out.dtype()), " tensor");
  const int64_t n = out.numel();
  void* p = out.raw_data();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = offset + static_cast<uint64_t>(i);
    const double v = normal ? a + b * philox_normal(seed, stream, k)
                            : a + (b - a) * static_cast<double>(philox_uniform(seed, stream, k));
    store(out.dtype(), p, i, v);
  }
}

}  // namespace dtrn
