// Views (reshape, transpose, narrow, unsqueeze) and copies across layouts, dtypes and devices, each with
// its backward. Views share storage; their backward maps the gradient back to the input's geometry.
#include "backend.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {
namespace {

int64_t wrap_dim(int64_t d, int64_t n, const char* op) {
  if (d < 0) d += n;
  DTRN_CHECK(d >= 0 && d < n, op, ": dimension ", d, " out of range for a ", n, "-d tensor");
  return d;
}

// A contiguous copy of src on the same device in `dtype` (kernels convert while copying).
Tensor copy_to_contiguous(const Tensor& src, DType dtype) {
  Tensor out = Tensor::empty(src.shape(), dtype, src.device());
  if (out.numel() > 0) backend_for(src.device()).copy(src, out);
  return out;
}

// A contiguous copy of src on `device`, same dtype.
Tensor transfer(const Tensor& src, Device device) {
  Tensor from = src.is_contiguous() ? src : copy_to_contiguous(src, src.dtype());
  Tensor out = Tensor::empty(src.shape(), src.dtype(), device);
  if (out.numel() == 0) return out;
  if (device.is_cpu()) {
    backend_for(src.device()).copy_to_host(out.raw_data(), from.raw_data(), out.nbytes());
  } else if (src.device().is_cpu()) {
    backend_for(device).copy_from_host(out.raw_data(), from.raw_data(), out.nbytes());
  } else {
    Tensor host = transfer(from, Device::cpu());
    backend_for(device).copy_from_host(out.raw_data(), host.raw_data(), out.nbytes());
  }
  return out;
}

}  // namespace

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape shape = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      DTRN_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(new_shape));
      infer = static_cast<int64_t>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    DTRN_CHECK(known > 0 && numel() % known == 0, "reshape: cannot view ", describe(), " as ",
               shape_str(new_shape));
    shape[infer] = numel() / known;
  }
  DTRN_CHECK(shape_numel(shape) == numel(), "reshape: cannot view ", describe(), " as ",
             shape_str(new_shape));
  if (!is_contiguous()) return contiguous().reshape(shape);
  Tensor out = make_view(*this, shape, contiguous_strides(shape), offset());
  Shape in_shape = this->shape();
  return record("reshape", out, {*this}, [in_shape](const Tensor& g) -> std::vector<Tensor> {
    return {g.reshape(in_shape)};
  });
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  d0 = wrap_dim(d0, dim(), "transpose");
  d1 = wrap_dim(d1, dim(), "transpose");
  Shape shape = this->shape(), strides = this->strides();
  std::swap(shape[d0], shape[d1]);
  std::swap(strides[d0], strides[d1]);
  Tensor out = make_view(*this, shape, strides, offset());
  return record("transpose", out, {*this}, [d0, d1](const Tensor& g) -> std::vector<Tensor> {
    return {g.transpose(d0, d1)};
  });
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  DTRN_CHECK(start >= 0 && length >= 0 && start + length <= size(d), "narrow: range [", start, ", ",
             start + length, ") out of bounds for dimension ", d, " of ", describe());
  Shape shape = this->shape();
  shape[d] = length;
  Tensor out = make_view(*this, shape, strides(), offset() + start * strides()[d]);
  Tensor input = *this;
  Shape in_shape = this->shape();
  DType dtype = this->dtype();
  Device device = this->device();
  return record("narrow", out, {*this},
                [in_shape, dtype, device, d, start, length](const Tensor& g) -> std::vector<Tensor> {
                  Tensor grad = Tensor::zeros(in_shape, dtype, device);
                  grad.detach().narrow(d, start, length).copy_(g);
                  return {grad};
                });
}

Tensor Tensor::unsqueeze(int64_t d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape shape = this->shape();
  shape.insert(shape.begin() + d, 1);
  return reshape(shape);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = copy_to_contiguous(*this, dtype());
  return record("contiguous", out, {*this}, [](const Tensor& g) -> std::vector<Tensor> {
    return {g};
  });
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = copy_to_contiguous(*this, target);
  DType source = dtype();
  if (!is_floating(target)) return out;
  return record("cast", out, {*this}, [source](const Tensor& g) -> std::vector<Tensor> {
    return {g.to(source)};
  });
}

Tensor Tensor::to(Device target) const {
  if (target == device()) return *this;
  Tensor out = transfer(*this, target);
  Device source = device();
  return record("to_device", out, {*this}, [source](const Tensor& g) -> std::vector<Tensor> {
    return {g.to(source)};
  });
}

Tensor Tensor::clone() const {
  Tensor out = copy_to_contiguous(*this, dtype());
  return record("clone", out, {*this}, [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
}

}  // namespace dtrn
