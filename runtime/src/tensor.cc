// Tensor creation, metadata and host access. Views and device/dtype moves are in ops/view.cc.
#include "dtrn/runtime/tensor.h"

#include <sstream>

#include "backend.h"
#include "dtrn/runtime/autograd.h"

namespace dtrn {

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  return strides;
}

namespace {

// A contiguous tensor of `shape` over the bytes `make_storage(nbytes)` returns.
template <typename MakeStorage>
Tensor fresh_tensor(const Shape& shape, DType dtype, MakeStorage make_storage) {
  for (int64_t s : shape) DTRN_CHECK(s >= 0, "negative dimension in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = make_storage(shape_numel(shape) * dtype_size(dtype));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return fresh_tensor(shape, dtype, [&](size_t n) { return std::make_shared<Storage>(n, device); });
}

Tensor Tensor::empty_pinned(const Shape& shape, DType dtype) {
  return fresh_tensor(shape, dtype, [](size_t n) {
    return std::make_shared<Storage>(n, Device::cpu(), pinned_host_allocator());
  });
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.numel() > 0) backend_for(device).fill(t, value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype,
                           Device device) {
  DTRN_CHECK_EQ(static_cast<int64_t>(values.size()), shape_numel(shape));
  Tensor host = empty(shape, DType::kF64, Device::cpu());
  std::copy(values.begin(), values.end(), host.data<double>());
  return host.to(dtype).to(device);
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype,
                         Device device) {
  DTRN_CHECK_EQ(static_cast<int64_t>(values.size()), shape_numel(shape));
  Tensor host = empty(shape, DType::kI64, Device::cpu());
  std::copy(values.begin(), values.end(), host.data<int64_t>());
  return host.to(dtype).to(device);
}

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, uint64_t seed, uint64_t stream,
                       uint64_t offset, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.numel() > 0) backend_for(device).fill_random(t, false, lo, hi, seed, stream, offset);
  return t;
}

Tensor Tensor::normal(const Shape& shape, double mean, double std, uint64_t seed, uint64_t stream,
                      uint64_t offset, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (t.numel() > 0) backend_for(device).fill_random(t, true, mean, std, seed, stream, offset);
  return t;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n;
  DTRN_CHECK(d >= 0 && d < n, "dimension ", d, " out of range for shape ", shape_str(shape()));
  return shape()[d];
}

Device Tensor::device() const {
  const auto& s = impl().storage;
  return s ? s->device() : Device::cpu();
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

void* Tensor::raw_data() const {
  auto& s = impl().storage;
  if (!s || s->data() == nullptr) return nullptr;
  return static_cast<char*>(s->data()) + offset() * dtype_size(dtype());
}

std::vector<double> Tensor::to_vector() const {
  Tensor host = detach().to(Device::cpu()).to(DType::kF64).contiguous();
  const double* p = host.data<double>();
  return std::vector<double>(p, p + host.numel());
}

std::vector<int64_t> Tensor::to_ints() const {
  DTRN_CHECK(!is_floating(dtype()), "to_ints() of a ", dtype_name(dtype()), " tensor");
  Tensor host = detach().to(Device::cpu()).to(DType::kI64).contiguous();
  const int64_t* p = host.data<int64_t>();
  return std::vector<int64_t>(p, p + host.numel());
}

double Tensor::item() const {
  DTRN_CHECK_EQ(numel(), 1);
  return to_vector()[0];
}

Tensor& Tensor::set_requires_grad(bool on) {
  DTRN_CHECK(is_leaf(), "set_requires_grad on a non-leaf tensor");
  DTRN_CHECK(!on || is_floating(dtype()), "only floating tensors can require grad, got ",
             dtype_name(dtype()));
  impl().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
void Tensor::zero_grad() const { impl().grad.reset(); }
void Tensor::set_grad(const Tensor& g) const {
  if (!g.defined()) {
    impl().grad.reset();
    return;
  }
  DTRN_CHECK(g.shape() == shape(), "set_grad: shape ", shape_str(g.shape()), " vs ",
             shape_str(shape()));
  impl().grad = g.impl_ptr();
}

void Tensor::backward(const Tensor& gradient) const { run_backward(*this, gradient); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = this->impl().storage;
  impl->shape = shape();
  impl->strides = strides();
  impl->offset = offset();
  impl->dtype = dtype();
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl().storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

void Tensor::copy_(const Tensor& src) const {
  DTRN_CHECK(src.shape() == shape(), "copy_: source ", src.describe(), " into ", describe());
  if (numel() == 0) return;
  if (src.device() != device() && src.dtype() == dtype() && is_contiguous() &&
      (src.device().is_cpu() || device().is_cpu())) {
    // Between the host and a device, straight into this tensor's memory: no staging copy, and from
    // a device into page-locked memory at DMA speed (a checkpoint snapshot is gigabytes of these).
    const Tensor from = src.detach().contiguous();
    if (device().is_cpu()) {
      backend_for(from.device()).copy_to_host(raw_data(), from.raw_data(), nbytes());
    } else {
      backend_for(device()).copy_from_host(raw_data(), from.raw_data(), nbytes());
    }
    return;
  }
  Tensor from = src.device() == device() ? src.detach() : src.detach().to(device());
  backend_for(device()).copy(from, *this);
}

void Tensor::fill_(double value) const {
  if (numel() == 0) return;
  if (is_contiguous()) {
    backend_for(device()).fill(*this, value);
  } else {
    copy_(Tensor::full(shape(), value, dtype(), device()));
  }
}

}  // namespace dtrn
