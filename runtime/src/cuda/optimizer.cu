// The multi-tensor optimizer step (train_kernels.h): the global gradient norm and AdamW over every
// parameter in two launches, whatever the number of tensors. Each thread block takes one TensorChunk.
//
// Determinism: the norm's partial sums are written per chunk and summed by one block in a fixed order,
// so the norm (hence clipping, hence the run) is bitwise reproducible; no atomics.
#include "cuda/cuda_check.h"
#include "cuda/device_types.cuh"
#include "cuda/train_kernels.h"

namespace dtrn::cuda {
namespace {

constexpr int kThreads = 256;

// Sum of `value` over the block, valid in thread 0; fixed reduction tree.
__device__ double block_sum(double value) {
  __shared__ double shared[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : 0.0;
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

__global__ void __launch_bounds__(kThreads) sum_squares_chunks(const AdamWSlot* slots,
                                                               const TensorChunk* chunks, double* partial) {
  const TensorChunk c = chunks[blockIdx.x];
  const float* g = slots[c.slot].grad;
  float acc = 0.f;
  double total = 0.0;
  int k = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += kThreads) {
    acc = fmaf(g[i], g[i], acc);
    // Fold into double every 64 terms so a long chunk loses no precision in the float accumulator.
    if (++k == 64) {
      total += acc;
      acc = 0.f;
      k = 0;
    }
  }
  total = block_sum(total + acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kThreads) sum_partials(const double* partial, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partial[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

// The update is evaluated in double from the f32 values and rounded once per stored value, exactly as
// the CPU backend does (cpu/adamw.cc), so the two agree to the last f32 bit up to FMA contraction.
__global__ void __launch_bounds__(kThreads) adamw_chunks(const AdamWSlot* slots, const TensorChunk* chunks,
                                                         AdamWHyper h, const double* norm_sq) {
  const TensorChunk c = chunks[blockIdx.x];
  const AdamWSlot s = slots[c.slot];
  double scale = 1.0;
  if (h.max_norm > 0) {
    const double norm = sqrt(*norm_sq);
    if (norm > h.max_norm) scale = h.max_norm / norm;
  }
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += kThreads) {
    const double g = scale * s.grad[i];
    const double m = h.beta1 * s.m[i] + (1 - h.beta1) * g;
    const double v = h.beta2 * s.v[i] + (1 - h.beta2) * g * g;
    s.m[i] = static_cast<float>(m);
    s.v[i] = static_cast<float>(v);
    const double update = (m / h.bias_correction1) / (sqrt(v / h.bias_correction2) + h.eps);
    const double p = s.param[i];
    const float next = static_cast<float>(p - h.lr * (update + s.weight_decay * p));
    s.param[i] = next;
    if (s.compute != nullptr) s.compute[i] = float_to_bf16(next).bits;
  }
}

}  // namespace

void launch_sum_squares_multi(const AdamWSlot* slots, const TensorChunk* chunks, int64_t num_chunks,
                              double* partial, double* out, cudaStream_t stream) {
  if (num_chunks == 0) return;
  sum_squares_chunks<<<static_cast<unsigned>(num_chunks), kThreads, 0, stream>>>(slots, chunks, partial);
  CUDA_CHECK_LAUNCH();
  sum_partials<<<1, kThreads, 0, stream>>>(partial, num_chunks, out);
  CUDA_CHECK_LAUNCH();
}

void launch_adamw_multi(const AdamWSlot* slots, const TensorChunk* chunks, int64_t num_chunks,
                        AdamWHyper hyper, const double* norm_sq, cudaStream_t stream) {
  if (num_chunks == 0) return;
  adamw_chunks<<<static_cast<unsigned>(num_chunks), kThreads, 0, stream>>>(slots, chunks, hyper, norm_sq);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
