// The backward of a matrix product (matmul.cc), for ops that save their product's input differently
// (activation_linear.cc recomputes it while computing the activation's gradient), and the forward of a
// product with a residual added inside it.
#pragma once

#include <memory>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

// What a product's backward needs: the operands (detached), their ops, and where b's gradient goes.
struct MatmulSaved {
  Tensor a, b;
  bool ta = false, tb = false, shared_b = false, need_a = false, need_b = false;
  std::shared_ptr<TensorImpl> b_buffer;  // Note [Weight gradients straight into their f32 buffers]
};

MatmulSaved save_for_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb);

// x W^T + residual with the add inside the product (Backend::gemm_add), recording nothing: the forward
// of an op that records its own node (activation_linear.cc).
Tensor linear_add_forward(const Tensor& x, const Tensor& weight, const Tensor& residual);

// {da, db} of c = op(a) op(b) for the gradient g of c (db undefined when it was accumulated into b's f32
// gradient buffer instead): matmul_grad_a then matmul_grad_b.
std::vector<Tensor> matmul_backward(const MatmulSaved& saved, const Tensor& g);

// The halves of matmul_backward, for an op that needs da before it has a (activation_linear.cc):
// da (undefined unless saved.need_a) reads only b; db reads saved.a, which may be undefined where
// saved.need_b is false.
Tensor matmul_grad_a(const MatmulSaved& saved, const Tensor& g);
Tensor matmul_grad_b(const MatmulSaved& saved, const Tensor& g);

}  // namespace dtrn
