// Tensor: an n-dimensional view (shape, strides in elements, offset) of a Storage, plus autograd state.
//
// A Tensor is a cheap handle (shared ownership of a TensorImpl); copies alias. Views (reshape of a
// contiguous tensor, transpose, narrow, unsqueeze) share storage and record autograd nodes like any op.
// Kernels read contiguous tensors; ops call contiguous() where they need to.
//
// Autograd state lives on the TensorImpl: requires_grad, the accumulated grad, and grad_fn, the node that
// produced it (null for leaves). See autograd.h.
//
// Thread-safety: a Tensor may be read from several threads; writes need external synchronisation.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dtrn/runtime/check.h"
#include "dtrn/runtime/device.h"
#include "dtrn/runtime/dtype.h"
#include "dtrn/runtime/storage.h"

namespace dtrn {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

class Node;
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::kF32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient, same shape; same dtype, f32 for bf16
  std::shared_ptr<Node> grad_fn;     // producer; null for leaves
  uint32_t output_nr = 0;            // which of grad_fn's outputs this tensor is (autograd.h)
  // Leaves only: called once per backward, after the last contribution of that backward was added to
  // .grad (register_post_accumulate_grad_hook in autograd.h).
  std::function<void()> post_accumulate_grad_hook;
  // Every element equals this value, and the host knows it without reading the device. Set only on
  // gradients the autograd engine makes (backward()'s own seed, 1) and on scale() of such a tensor;
  // nothing writes these in place. cross_entropy's backward reads it (ops.h).
  std::optional<double> known_value;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- Creation (never records autograd history) ---
  static Tensor empty(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  // A host tensor in page-locked memory where a GPU is present (pinned_host_allocator in allocator.h).
  static Tensor empty_pinned(const Shape& shape, DType dtype = DType::kF32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::kF32,
                     Device device = Device::cpu());
  // Copies host values (converted to `dtype`) into a new tensor on `device`.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape,
                          DType dtype = DType::kI64, Device device = Device::cpu());
  // Uniform in [lo, hi) / normal(mean, std) from the counter-based RNG: element i is a pure function of
  // (seed, stream, offset + i), on every device (see rng.h).
  static Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed, uint64_t stream,
                        uint64_t offset = 0, DType dtype = DType::kF32, Device device = Device::cpu());
  static Tensor normal(const Shape& shape, double mean, double std, uint64_t seed, uint64_t stream,
                       uint64_t offset = 0, DType dtype = DType::kF32, Device device = Device::cpu());

  // --- Metadata ---
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const;
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string describe() const;  // "f32[2, 3] on cpu"

  // Pointer to the first element (storage + offset). The typed form checks the dtype.
  void* raw_data() const;
  template <typename T>
  T* data() const {
    DTRN_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a ",
               dtype_name(dtype()), " tensor");
    return static_cast<T*>(raw_data());
  }

  // --- Views and copies (autograd-aware) ---
  Tensor reshape(const Shape& shape) const;  // view when contiguous; one dim may be -1
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor contiguous() const;  // self when already contiguous
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;  // a contiguous copy with its own storage

  // --- Host access (copies to the CPU as needed) ---
  std::vector<double> to_vector() const;   // floating point or integer, as double
  std::vector<int64_t> to_ints() const;    // integer tensors
  double item() const;                     // a one-element tensor

  // --- Autograd ---
  bool requires_grad() const { return impl().requires_grad; }
  // TensorImpl::known_value: set when every element is a value the host knows (autograd seeds).
  std::optional<double> known_value() const { return impl().known_value; }
  Tensor& set_requires_grad(bool on);  // leaves only
  Tensor grad() const;                 // undefined until a backward reached this leaf
  void zero_grad() const;              // drops the accumulated gradient
  void set_grad(const Tensor& g) const;
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  // Backpropagates from this scalar (gradient 1) or with the given gradient of the same shape.
  void backward(const Tensor& gradient = Tensor()) const;
  // Same storage, no history, requires_grad false.
  Tensor detach() const;

  // Writes every element of `src` (same shape, any dtype, any device) into this tensor in place, without
  // recording history. For parameter updates and state restore.
  void copy_(const Tensor& src) const;
  void fill_(double value) const;

  TensorImpl& impl() const {
    DTRN_CHECK(impl_ != nullptr, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// A new impl viewing `base`'s storage with the given geometry (no autograd history).
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);

}  // namespace dtrn
