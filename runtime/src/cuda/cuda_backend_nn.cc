// CudaBackend's normalisation, position, softmax and cross-entropy kernels. Each validates its tensors
// (kernel_args.h) and calls the launcher (norm.h, softmax.h) on the tensors' device and stream.
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/cuda_backend.h"
#include "cuda/kernel_args.h"
#include "cuda/norm.h"
#include "cuda/softmax.h"

namespace dtrn {

using cuda::check_compute_dtype;
using cuda::elem_type_of;

namespace {

void check_stats(const char* kernel, const Tensor& data, const Tensor& stats, int64_t rows) {
  DTRN_ASSERT(stats.dtype() == cuda::stats_dtype_of(data.dtype()) && stats.numel() == rows, kernel,
              ": per-row statistics ", stats.describe(), " for ", data.describe());
}

// The launchers' description of a cross-entropy call, after checking the tensors' geometry.
cuda::CrossEntropyArgs cross_entropy_args(const char* kernel, const Tensor& logits,
                                          const Tensor& targets, int64_t ignore_index,
                                          int64_t num_classes) {
  check_compute_dtype(kernel, logits);
  cuda::check_index_dtype(kernel, targets);
  DTRN_ASSERT(logits.dim() == 2 && targets.numel() == logits.size(0) && num_classes >= 1 &&
                  num_classes <= logits.size(1),
              kernel, ": ", logits.describe(), ", ", targets.describe(), ", num_classes ",
              num_classes);
  cuda::CrossEntropyArgs args;
  args.rows = logits.size(0);
  args.cols = logits.size(1);
  args.num_classes = num_classes;
  args.ignore_index = ignore_index;
  args.targets = targets.raw_data();
  args.target_type = elem_type_of(targets.dtype());
  return args;
}

// RoPE's (cos, sin) tables by (device, theta's bits, D) (Note [RoPE's table] in rope.cu), grown to the
// most rows a call has had. Leaked, like the product plans (cuda_context.h): tensors must not be freed
// after the allocator at exit.
struct RopeTables {
  struct Entry {
    Tensor table;  // f64 [rows, D / 2, 2]
    int64_t rows = 0;
  };
  std::mutex mutex;
  std::map<std::tuple<int, uint64_t, int64_t>, Entry> entries;
};

// The table for `device`, theta and D holding at least `rows` positions, built on `stream` if needed.
std::pair<const void*, int64_t> rope_table(int device, double theta, int64_t dim, int64_t rows,
                                           cudaStream_t stream) {
  static RopeTables* tables = new RopeTables();
  uint64_t theta_bits = 0;
  std::memcpy(&theta_bits, &theta, sizeof theta_bits);
  std::lock_guard<std::mutex> lock(tables->mutex);
  RopeTables::Entry& e = tables->entries[{device, theta_bits, dim}];
  if (e.rows < rows) {
    // The old table may still be read by queued kernels: the allocator reuses its memory only in
    // stream order.
    e.table = Tensor::empty({rows, dim / 2, 2}, DType::kF64, Device::cuda(device));
    e.rows = rows;
    cuda::launch_rope_table(theta, rows, dim, e.table.raw_data(), stream);
  }
  return {e.table.raw_data(), e.rows};
}

}  // namespace

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                          const Tensor& rstd) {
  check_compute_dtype("rmsnorm", x, {&w, &y});
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(x.dim() == 2 && w.numel() == c && y.shape() == x.shape(), "rmsnorm: ",
              x.describe(), ", ", w.describe(), " -> ", y.describe());
  check_stats("rmsnorm", x, rstd, n);
  cuda::OnDevice on(cuda::device_of_all("rmsnorm", {&x, &w, &y, &rstd}));
  cuda::launch_rmsnorm(elem_type_of(x.dtype()), x.raw_data(), w.raw_data(), eps, n, c, y.raw_data(),
                       rstd.raw_data(), on.stream);
}

void CudaBackend::rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                   const Tensor& dy, const Tensor& dx, const Tensor& dw) {
  check_compute_dtype("rmsnorm_backward", x, {&w, &dy, &dx, &dw});
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(x.dim() == 2 && w.numel() == c && dw.numel() == c && dy.shape() == x.shape() &&
                  dx.shape() == x.shape(),
              "rmsnorm_backward: ", x.describe(), ", ", dy.describe(), " -> ", dx.describe(), ", ",
              dw.describe());
  check_stats("rmsnorm_backward", x, rstd, n);
  const int device = cuda::device_of_all("rmsnorm_backward", {&x, &w, &rstd, &dy, &dx, &dw});
  cuda::OnDevice on(device);
  Tensor scratch = cuda::scratch_tensor(cuda::rmsnorm_backward_scratch_bytes(n, c), device);
  cuda::launch_rmsnorm_backward(elem_type_of(x.dtype()), x.raw_data(), w.raw_data(), rstd.raw_data(),
                                dy.raw_data(), n, c, dx.raw_data(), dw.raw_data(),
                                scratch.raw_data(), on.stream);
}

void CudaBackend::add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& w, double eps,
                              const Tensor& h, const Tensor& y, const Tensor& rstd) {
  check_compute_dtype("add_rmsnorm", x, {&delta, &w, &h, &y});
  const int64_t n = x.size(0), c = x.size(1);
  DTRN_ASSERT(x.dim() == 2 && delta.shape() == x.shape() && w.numel() == c && h.shape() == x.shape() &&
                  y.shape() == x.shape(),
              "add_rmsnorm: ", x.describe(), ", ", delta.describe(), ", ", w.describe(), " -> ",
              h.describe(), ", ", y.describe());
  check_stats("add_rmsnorm", x, rstd, n);
  cuda::OnDevice on(cuda::device_of_all("add_rmsnorm", {&x, &delta, &w, &h, &y, &rstd}));
  cuda::launch_add_rmsnorm(elem_type_of(x.dtype()), x.raw_data(), delta.raw_data(), w.raw_data(), eps, n,
                           c, h.raw_data(), y.raw_data(), rstd.raw_data(), on.stream);
}

void CudaBackend::add_rmsnorm_backward(const Tensor& h, const Tensor& w, const Tensor& rstd,
                                       const Tensor& dy, const Tensor& dh, const Tensor& dx,
                                       const Tensor& dw) {
  check_compute_dtype("add_rmsnorm_backward", h, {&w, &dy, &dh, &dx, &dw});
  const int64_t n = h.size(0), c = h.size(1);
  DTRN_ASSERT(h.dim() == 2 && w.numel() == c && dw.numel() == c && dy.shape() == h.shape() &&
                  dh.shape() == h.shape() && dx.shape() == h.shape(),
              "add_rmsnorm_backward: ", h.describe(), ", ", dy.describe(), ", ", dh.describe(), " -> ",
              dx.describe(), ", ", dw.describe());
  check_stats("add_rmsnorm_backward", h, rstd, n);
  const int device = cuda::device_of_all("add_rmsnorm_backward", {&h, &w, &rstd, &dy, &dh, &dx, &dw});
  cuda::OnDevice on(device);
  Tensor scratch = cuda::scratch_tensor(cuda::rmsnorm_backward_scratch_bytes(n, c), device);
  cuda::launch_add_rmsnorm_backward(elem_type_of(h.dtype()), h.raw_data(), w.raw_data(), rstd.raw_data(),
                                    dy.raw_data(), dh.raw_data(), n, c, dx.raw_data(), dw.raw_data(),
                                    scratch.raw_data(), on.stream);
}

void CudaBackend::rope(const Tensor& x, const Tensor& positions, double theta, bool inverse,
                       const Tensor& out) {
  check_compute_dtype("rope", x, {&out});
  cuda::check_index_dtype("rope", positions);
  DTRN_ASSERT(x.dim() == 3 && x.size(2) % 2 == 0 && out.shape() == x.shape() &&
                  positions.numel() == x.size(0),
              "rope: ", x.describe(), ", ", positions.describe(), " -> ", out.describe());
  // The kernel indexes within a row in int.
  DTRN_CHECK(x.size(1) * x.size(2) <= INT32_MAX, "rope: rows of ", x.size(1), " x ", x.size(2),
             " are beyond the CUDA kernel (heads x D < 2^31)");
  const int device = cuda::device_of_all("rope", {&x, &positions, &out});
  cuda::OnDevice on(device);
  const auto [table, table_rows] = rope_table(device, theta, x.size(2), x.size(0), on.stream);
  cuda::launch_rope(elem_type_of(x.dtype()), x.raw_data(), positions.raw_data(),
                    elem_type_of(positions.dtype()), table, table_rows, theta, inverse, x.size(0),
                    x.size(1), x.size(2), out.raw_data(), on.stream);
}

void CudaBackend::softmax(const Tensor& x, const Tensor& y) {
  check_compute_dtype("softmax", x, {&y});
  DTRN_ASSERT(x.dim() == 2 && y.shape() == x.shape(), "softmax: ", x.describe(), " -> ",
              y.describe());
  cuda::OnDevice on(cuda::device_of_all("softmax", {&x, &y}));
  cuda::launch_softmax(elem_type_of(x.dtype()), x.raw_data(), x.size(0), x.size(1), y.raw_data(),
                       on.stream);
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx) {
  check_compute_dtype("softmax_backward", y, {&dy, &dx});
  DTRN_ASSERT(y.dim() == 2 && dy.shape() == y.shape() && dx.shape() == y.shape(),
              "softmax_backward: ", y.describe(), ", ", dy.describe(), " -> ", dx.describe());
  cuda::OnDevice on(cuda::device_of_all("softmax_backward", {&y, &dy, &dx}));
  cuda::launch_softmax_backward(elem_type_of(y.dtype()), y.raw_data(), dy.raw_data(), y.size(0),
                                y.size(1), dx.raw_data(), on.stream);
}

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                int64_t num_classes, const Tensor& losses, const Tensor& lse) {
  const cuda::CrossEntropyArgs args =
      cross_entropy_args("cross_entropy", logits, targets, ignore_index, num_classes);
  check_stats("cross_entropy", logits, losses, args.rows);
  check_stats("cross_entropy", logits, lse, args.rows);
  cuda::OnDevice on(cuda::device_of_all("cross_entropy", {&logits, &targets, &losses, &lse}));
  cuda::launch_cross_entropy(elem_type_of(logits.dtype()), logits.raw_data(), args,
                             losses.raw_data(), lse.raw_data(), on.stream);
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets,
                                         int64_t ignore_index, int64_t num_classes,
                                         const Tensor& lse, const Tensor& grad, double scale,
                                         const Tensor& dlogits) {
  const cuda::CrossEntropyArgs args =
      cross_entropy_args("cross_entropy_backward", logits, targets, ignore_index, num_classes);
  check_stats("cross_entropy_backward", logits, lse, args.rows);
  DTRN_ASSERT(dlogits.shape() == logits.shape() && dlogits.dtype() == logits.dtype() &&
                  grad.numel() == 1 && (grad.dtype() == DType::kF32 || grad.dtype() == DType::kF64),
              "cross_entropy_backward: ", dlogits.describe(), ", upstream gradient ",
              grad.describe());
  cuda::OnDevice on(cuda::device_of_all("cross_entropy_backward",
                                        {&logits, &targets, &lse, &grad, &dlogits}));
  cuda::launch_cross_entropy_backward(elem_type_of(logits.dtype()), logits.raw_data(), args,
                                      lse.raw_data(), grad.raw_data(), elem_type_of(grad.dtype()),
                                      scale, dlogits.raw_data(), on.stream);
}

void CudaBackend::cross_entropy_fused(const Tensor& logits, const Tensor& targets,
                                      int64_t ignore_index, int64_t num_classes, double scale,
                                      const Tensor& losses, const Tensor& lse,
                                      const Tensor& dlogits) {
  const cuda::CrossEntropyArgs args =
      cross_entropy_args("cross_entropy_fused", logits, targets, ignore_index, num_classes);
  check_stats("cross_entropy_fused", logits, losses, args.rows);
  check_stats("cross_entropy_fused", logits, lse, args.rows);
  DTRN_ASSERT(dlogits.shape() == logits.shape() && dlogits.dtype() == logits.dtype(),
              "cross_entropy_fused: ", dlogits.describe(), " for ", logits.describe());
  cuda::OnDevice on(cuda::device_of_all("cross_entropy_fused",
                                        {&logits, &targets, &losses, &lse, &dlogits}));
  cuda::launch_cross_entropy_fused(elem_type_of(logits.dtype()), logits.raw_data(), args, scale,
                                   losses.raw_data(), lse.raw_data(), dlogits.raw_data(), on.stream);
}

}  // namespace dtrn
