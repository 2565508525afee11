// CudaBackend's reductions (sum over a dimension, sum of squares) and gathers/scatters along one
// dimension (index_select, index_add). Each validates its tensors (kernel_args.h), allocates the
// scratch its launcher asks for (reduce.h, index.h) and queues the work on the tensors' device.
#include <limits>

#include "cuda/cuda_backend.h"
#include "cuda/index.h"
#include "cuda/kernel_args.h"
#include "cuda/reduce.h"

namespace dtrn {

using cuda::check_compute_dtype;
using cuda::elem_type_of;

void CudaBackend::sum_dim(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out) {
  check_compute_dtype("sum", x, {&out});
  DTRN_ASSERT(x.numel() == outer * n * inner && out.numel() == outer * inner && n >= 1,
              "sum: ", x.describe(), " as [", outer, ", ", n, ", ", inner, "] -> ", out.describe());
  const int device = cuda::device_of_all("sum", {&x, &out});
  if (out.numel() == 0) return;
  cuda::OnDevice on(device);
  Tensor scratch = cuda::scratch_tensor(cuda::sum_dim_scratch_bytes(outer, n, inner), device);
  cuda::launch_sum_dim(elem_type_of(x.dtype()), x.raw_data(), outer, n, inner, out.raw_data(),
                       scratch.raw_data(), on.stream);
}

double CudaBackend::sum_squares(const Tensor& x) {
  check_compute_dtype("sum_squares", x);
  const int device = cuda::device_of_all("sum_squares", {&x});
  if (x.numel() == 0) return 0.0;
  cuda::OnDevice on(device);
  const int64_t partials = cuda::sum_squares_scratch_doubles(x.numel());
  Tensor scratch = Tensor::empty({partials + 1}, DType::kF64, Device::cuda(device));
  double* base = scratch.data<double>();
  cuda::launch_sum_squares(elem_type_of(x.dtype()), x.raw_data(), x.numel(), base, base + partials,
                           on.stream);
  double result = 0;
  copy_to_host(&result, base + partials, sizeof(double));  // waits for the kernels
  return result;
}

void CudaBackend::index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                               const Tensor& index, const Tensor& out) {
  cuda::check_index_dtype("index_select", index);
  const int64_t m = index.numel();
  DTRN_ASSERT(x.numel() == outer * n * inner && out.numel() == outer * m * inner &&
                  out.dtype() == x.dtype(),
              "index_select: ", x.describe(), " as [", outer, ", ", n, ", ", inner, "] with ",
              index.describe(), " -> ", out.describe());
  cuda::OnDevice on(cuda::device_of_all("index_select", {&x, &index, &out}));
  cuda::launch_index_select(x.raw_data(), static_cast<int>(dtype_size(x.dtype())), outer, n, inner,
                            index.raw_data(), elem_type_of(index.dtype()), m, out.raw_data(),
                            on.stream);
}

void CudaBackend::index_add(const Tensor& out, int64_t outer, int64_t n, int64_t inner,
                            const Tensor& index, const Tensor& src) {
  check_compute_dtype("index_add", out, {&src});
  cuda::check_index_dtype("index_add", index);
  const int64_t m = index.numel();
  DTRN_ASSERT(out.numel() == outer * n * inner && src.numel() == outer * m * inner,
              "index_add: ", out.describe(), " as [", outer, ", ", n, ", ", inner, "] with ",
              index.describe(), " from ", src.describe());
  constexpr int64_t kLimit = std::numeric_limits<int32_t>::max();
  DTRN_CHECK(n <= kLimit && m <= kLimit, "index_add: the CUDA backend sorts 32-bit indices; ", n,
             " rows or ", m, " indices is too many");
  const int device = cuda::device_of_all("index_add", {&out, &index, &src});
  if (outer * m * inner == 0) return;
  cuda::OnDevice on(device);
  const size_t bytes = cuda::index_add_scratch_bytes(n, m);
  Tensor scratch = cuda::scratch_tensor(bytes, device);
  cuda::launch_index_add(elem_type_of(out.dtype()), out.raw_data(), outer, n, inner, index.raw_data(),
                         elem_type_of(index.dtype()), m, src.raw_data(), scratch.raw_data(), bytes,
                         on.stream);
}

}  // namespace dtrn
