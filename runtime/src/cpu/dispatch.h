// Helpers for CPU kernels: run a generic lambda with the C++ type of a floating or index dtype.
#pragma once

#include <cstdint>

#include "dtrn/runtime/check.h"
#include "dtrn/runtime/dtype.h"

namespace dtrn {

// Calls fn(double{}) or fn(float{}) for f64/f32; anything else is an error naming `op`.
template <typename Fn>
decltype(auto) dispatch_floating(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::kF64: return fn(double{});
    case DType::kF32: return fn(float{});
    default: DTRN_CHECK(false, op, ": the CPU backend computes in f64 or f32, got ", dtype_name(dtype));
  }
  __builtin_unreachable();
}

// Reads element i of an i32 or i64 index tensor's data as int64.
inline int64_t read_index(DType dtype, const void* data, int64_t i) {
  return dtype == DType::kI32 ? static_cast<const int32_t*>(data)[i]
                              : static_cast<const int64_t*>(data)[i];
}

}  // namespace dtrn
