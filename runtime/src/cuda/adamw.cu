// AdamW (adamw.h): one grid-stride pass, each element's update computed in double in the CPU's order.
#include "cuda/adamw.h"
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

template <typename T>
using Moment = Compute<T>;

template <typename T>
__global__ void adamw_kernel(T* param, const T* grad, Moment<T>* m, Moment<T>* v, int64_t n,
                             AdamWHyper h) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const double g = static_cast<double>(to_compute(grad[i]));
    const double mi = h.beta1 * static_cast<double>(m[i]) + (1 - h.beta1) * g;
    const double vi = h.beta2 * static_cast<double>(v[i]) + (1 - h.beta2) * g * g;
    m[i] = static_cast<Moment<T>>(mi);
    v[i] = static_cast<Moment<T>>(vi);
    const double update = (mi / h.bias_correction1) / (sqrt(vi / h.bias_correction2) + h.eps);
    const double p = static_cast<double>(to_compute(param[i]));
    param[i] = from_double<T>(p - h.lr * (update + h.weight_decay * p));
  }
}

}  // namespace

void launch_adamw(ElemType type, void* param, const void* grad, void* m, void* v, int64_t n,
                  const AdamWHyper& h, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    adamw_kernel<<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<Moment<T>*>(m),
        static_cast<Moment<T>*>(v), n, h);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
