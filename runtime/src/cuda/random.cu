// Random fills on the device: element i of the output is draw number (offset + i) of (seed, stream), as
// rng.h defines it, computed with the same Philox code as the CPU (rng_philox.h).
//
// Uniform draws match the CPU bit for bit: the 24-bit uniform is exact in float, and the affine map
// a + (b - a) * u is evaluated in double with explicit round-to-nearest multiply and add so that nvcc
// cannot fuse them into an FMA the CPU build does not use. Normal draws use the device's double log and
// cos, which are within 2 ulp of glibc's; after rounding to f32 or bf16 they almost always equal the CPU's
// bits, in f64 they agree to about 1e-15 relative.
#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"
#include "rng_philox.h"

namespace dtrn::cuda {
namespace {

template <typename T>
__global__ void random_kernel(T* out, int64_t n, bool normal, double a, double b, uint64_t seed,
                              uint64_t stream, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t k = offset + static_cast<uint64_t>(i);
    double v;
    if (normal) {
      const double u1 = philox_word_to_open_unit(philox_word(seed, stream, 2 * k));
      const double u2 = philox_word_to_unit(philox_word(seed, stream, 2 * k + 1));
      const double z = __dmul_rn(sqrt(__dmul_rn(-2.0, log(u1))), cos(__dmul_rn(6.283185307179586, u2)));
      v = __dadd_rn(a, __dmul_rn(b, z));
    } else {
      const double u = philox_word_to_uniform(philox_word(seed, stream, k));
      v = __dadd_rn(a, __dmul_rn(__dsub_rn(b, a), u));
    }
    out[i] = FromDouble<T>::run(v);
  }
}

}  // namespace

void launch_fill_random(void* out, ElemType type, int64_t n, bool normal, double a, double b,
                        uint64_t seed, uint64_t rng_stream, uint64_t offset, cudaStream_t stream) {
  if (n == 0) return;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    random_kernel<T><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(
        static_cast<T*>(out), n, normal, a, b, seed, rng_stream, offset);
  };
  dispatch_floating_elem(type, run);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
