// Element types a Tensor can hold. f64 serves gradient checks and references, f32 is the CPU compute and
// master-weight type, bf16 the GPU compute type, i32/i64 hold token ids, indices and offsets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dtrn/runtime/bf16.h"

namespace dtrn {

enum class DType : uint8_t { kF64, kF32, kBF16, kI32, kI64 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "f64", "f32", "bf16", "i32", "i64"
bool is_floating(DType dtype);

// The DType of a C++ scalar type: dtype_of<float>() == DType::kF32.
template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return DType::kF64; }
template <> constexpr DType dtype_of<float>() { return DType::kF32; }
template <> constexpr DType dtype_of<BFloat16>() { return DType::kBF16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::kI32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::kI64; }

}  // namespace dtrn
