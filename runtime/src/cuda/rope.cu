// Rotate-half rotary position embedding (norm.h; formula and conventions in cpu/norm.cc). A thread
// per (row, frequency i < D/2) forms the angle positions[row] * theta^(-2i/D) and its sine and cosine
// in double (angles reach ~1e5 radians at long contexts, beyond f32's precision), then rotates the pair
// (i, i + D/2) of every head of the row in double, rounding each output once.
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
#include "cuda/norm.h"

namespace dtrn::cuda {
namespace {

template <typename T, typename Position>
__global__ void rope_kernel(const T* x, const Position* positions, double theta, double sign,
                            int64_t n, int64_t heads, int64_t dim, T* out) {
  const int64_t half = dim / 2, total = n * half;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % half, row = t / half;
    const double freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(dim));
    const double angle = static_cast<double>(positions[row]) * freq;
    double sn, cs;
    sincos(angle, &sn, &cs);
    sn *= sign;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (row * heads + h) * dim;
      const double x1 = static_cast<double>(to_compute(x[base + i]));
      const double x2 = static_cast<double>(to_compute(x[base + i + half]));
      out[base + i] = from_double<T>(x1 * cs - x2 * sn);
      out[base + i + half] = from_double<T>(x2 * cs + x1 * sn);
    }
  }
}

}  // namespace

void launch_rope(ElemType type, const void* x, const void* positions, ElemType position_type,
                 double theta, bool inverse, int64_t n, int64_t heads, int64_t dim, void* out,
                 cudaStream_t stream) {
  const int64_t total = n * (dim / 2);
  if (total * heads == 0) return;
  const double sign = inverse ? -1.0 : 1.0;
  const unsigned blocks = elementwise_blocks(total);
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* ot = static_cast<T*>(out);
    if (position_type == ElemType::kI32) {
      rope_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
          xt, static_cast<const int32_t*>(positions), theta, sign, n, heads, dim, ot);
    } else {
      rope_kernel<<<blocks, kElementwiseThreads, 0, stream>>>(
          xt, static_cast<const int64_t*>(positions), theta, sign, n, heads, dim, ot);
    }
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
