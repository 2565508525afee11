// Shared helpers of the op layer (ops/*.cc): dimension wrapping, broadcasting, and expansion.
#pragma once

#include "backend.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);

// The numpy broadcast of two shapes; throws naming `op` and both shapes when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// A view of x with shape `target` (x's shape broadcast to it): zero strides where x is broadcast.
Tensor broadcast_view(const Tensor& x, const Shape& target);

// A contiguous copy of x broadcast to `target` (no autograd history).
Tensor expand_copy(const Tensor& x, const Shape& target);

// Checks that a and b share dtype and device, naming `op`.
void check_same_kind(const Tensor& a, const Tensor& b, const char* op);

// Checks a 1-d i32/i64 index on x's device, naming `op`.
void check_index(const Tensor& index, const Tensor& x, const char* op);

// Checks a floating tensor, naming `op`.
void check_floating(const Tensor& x, const char* op);

inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }

}  // namespace dtrn
