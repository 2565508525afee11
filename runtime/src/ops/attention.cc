// attention() and causal_attention() of ops.h with their backward. attention() validates the packed
// layout (q [N, H, D], k and v [N, G, D], cu_seqlens i32 [S+1] running from 0 to N without
// decreasing), runs the device's attention kernel with scale 1/sqrt(D), and saves q, k, v, the output
// (detached, Note [Saving outputs]) and the per-row log-sum-exp for the backward kernel. Offsets on
// the host are checked here; offsets on a GPU are not read back, which would wait for the device at
// every call: the CUDA kernels keep invalid ones inside the tensors (Note [Attention grids without
// host synchronisation] in cuda/attention.h). Empty tensors (N = 0) skip the kernels. causal_attention() is the dense
// case: a batch of B sequences of equal length T is a packed batch with offsets 0, T, ..., BT.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/op_util.h"

namespace dtrn {

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens) {
  DTRN_CHECK(q.dim() == 3 && k.dim() == 3, "attention: q ", shape_str(q.shape()),
             " must be [N, H, D] and k ", shape_str(k.shape()), " [N, G, D]");
  DTRN_CHECK(v.shape() == k.shape(), "attention: k ", shape_str(k.shape()), " and v ",
             shape_str(v.shape()), " differ");
  DTRN_CHECK(k.size(0) == q.size(0), "attention: q ", shape_str(q.shape()), " and k ",
             shape_str(k.shape()), " differ in the number of rows N");
  DTRN_CHECK(k.size(2) == q.size(2) && q.size(2) > 0, "attention: q ", shape_str(q.shape()),
             " and k ", shape_str(k.shape()), " need the same positive head dimension D");
  DTRN_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "attention: the query heads H of q ",
             shape_str(q.shape()), " must be a multiple of the key/value heads G of k ",
             shape_str(k.shape()));
  check_floating(q, "attention");
  check_same_kind(q, k, "attention");
  check_same_kind(q, v, "attention");
  DTRN_CHECK(cu_seqlens.device() == q.device(), "attention: devices differ: ", q.describe(),
             " vs cu_seqlens ", cu_seqlens.describe());
  DTRN_CHECK(cu_seqlens.dtype() == DType::kI32 && cu_seqlens.dim() == 1 && cu_seqlens.size(0) >= 1,
             "attention: cu_seqlens must be i32 [S+1], got ", cu_seqlens.describe());
  const int64_t n = q.size(0), h = q.size(1), d = q.size(2);
  if (cu_seqlens.device().is_cpu()) {
    const std::vector<int64_t> cu = cu_seqlens.to_ints();
    DTRN_CHECK(cu.front() == 0 && cu.back() == n, "attention: cu_seqlens must run from 0 to N = ", n,
               " of q ", shape_str(q.shape()), ", got ", cu.front(), " .. ", cu.back());
    for (size_t i = 0; i + 1 < cu.size(); ++i) {
      DTRN_CHECK(cu[i] <= cu[i + 1], "attention: cu_seqlens decreases at ", i, ": ", cu[i], " > ",
                 cu[i + 1]);
    }
  }

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  Tensor qd = q.detach().contiguous(), kd = k.detach().contiguous(), vd = v.detach().contiguous();
  Tensor offsets = cu_seqlens.contiguous();
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  const DType stats = q.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  Tensor lse = Tensor::empty({h, n}, stats, q.device());
  if (out.numel() > 0) backend_of(q).attention(qd, kd, vd, offsets, scale, out, lse);
  return record("attention", out, {q, k, v, cu_seqlens},
                [qd, kd, vd, offsets, scale, o = out.detach(),
                 lse](const Tensor& grad) -> std::vector<Tensor> {
                  // Without query rows the kernel is skipped and k, v get zero gradients.
                  auto make = qd.numel() > 0 ? Tensor::empty : Tensor::zeros;
                  Tensor dq = make(qd.shape(), qd.dtype(), qd.device());
                  Tensor dk = make(kd.shape(), kd.dtype(), kd.device());
                  Tensor dv = make(vd.shape(), vd.dtype(), vd.device());
                  if (qd.numel() > 0) {
                    backend_of(qd).attention_backward(qd, kd, vd, offsets, scale, o, lse,
                                                      grad.contiguous(), dq, dk, dv);
                  }
                  return {dq, dk, dv, Tensor()};
                });
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  DTRN_CHECK(q.dim() == 4 && k.dim() == 4, "causal_attention: q ", shape_str(q.shape()),
             " must be [B, T, H, D] and k ", shape_str(k.shape()), " [B, T, G, D]");
  DTRN_CHECK(v.shape() == k.shape(), "causal_attention: k ", shape_str(k.shape()), " and v ",
             shape_str(v.shape()), " differ");
  DTRN_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1), "causal_attention: q ",
             shape_str(q.shape()), " and k ", shape_str(k.shape()), " differ in B or T");
  const int64_t b = q.size(0), t = q.size(1);
  DTRN_CHECK(b * t <= std::numeric_limits<int32_t>::max(), "causal_attention: B * T = ", b * t,
             " of q ", shape_str(q.shape()), " exceeds the i32 offsets of cu_seqlens");
  std::vector<int64_t> offsets(b + 1);
  for (int64_t i = 0; i <= b; ++i) offsets[i] = i * t;
  Tensor cu_seqlens = Tensor::from_ints(offsets, {b + 1}, DType::kI32, q.device());
  Tensor out =
      attention(q.reshape({b * t, q.size(2), q.size(3)}), k.reshape({b * t, k.size(2), k.size(3)}),
                v.reshape({b * t, v.size(2), v.size(3)}), cu_seqlens);
  return out.reshape(q.shape());
}

}  // namespace dtrn
