// The multi-tensor optimizer step (train_kernels.h): the global gradient norm and AdamW over every
// parameter in two launches, whatever the number of tensors. Each thread block takes one TensorChunk.
//
// Determinism: the norm's partial sums are written per chunk and summed by one block in a fixed order,
// so the norm (hence clipping, hence the run) is bitwise reproducible; no atomics.
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"
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

// One element's update: the CPU's expression (cpu/adamw.cc) in double from the f32 values, every
// operation rounded on its own (mul_rn, add_rn and the _rn intrinsics: nvcc would otherwise contract
// products and sums into FMAs, which the CPU build never does) and each stored value rounded once, so
// that the GPU and the CPU agree to the last bit. m, v and p are read and overwritten.
__device__ __forceinline__ void adamw_element(const AdamWHyper& h, double scale, double weight_decay,
                                              float grad, float& m, float& v, float& p) {
  const double g = mul_rn(scale, static_cast<double>(grad));
  const double md = add_rn(mul_rn(h.beta1, static_cast<double>(m)), mul_rn(1 - h.beta1, g));
  const double vd = add_rn(mul_rn(h.beta2, static_cast<double>(v)), mul_rn(mul_rn(1 - h.beta2, g), g));
  m = static_cast<float>(md);
  v = static_cast<float>(vd);
  const double denom = add_rn(__dsqrt_rn(__ddiv_rn(vd, h.bias_correction2)), h.eps);
  const double update = __ddiv_rn(__ddiv_rn(md, h.bias_correction1), denom);
  const double pd = p;
  p = static_cast<float>(__dsub_rn(pd, mul_rn(h.lr, add_rn(update, mul_rn(weight_decay, pd)))));
}

// Four consecutive elements of every operand: 16-byte accesses of the f32 arrays, 8 of the bf16 copy.
struct Quad {
  float4 g, m, v, p;
};

__device__ __forceinline__ Quad load_quad(const AdamWSlot& s, int64_t i) {
  return {*reinterpret_cast<const float4*>(s.grad + i), *reinterpret_cast<const float4*>(s.m + i),
          *reinterpret_cast<const float4*>(s.v + i), *reinterpret_cast<const float4*>(s.param + i)};
}

__device__ __forceinline__ void update_and_store_quad(const AdamWHyper& h, double scale, const AdamWSlot& s,
                                                      int64_t i, Quad q) {
  adamw_element(h, scale, s.weight_decay, q.g.x, q.m.x, q.v.x, q.p.x);
  adamw_element(h, scale, s.weight_decay, q.g.y, q.m.y, q.v.y, q.p.y);
  adamw_element(h, scale, s.weight_decay, q.g.z, q.m.z, q.v.z, q.p.z);
  adamw_element(h, scale, s.weight_decay, q.g.w, q.m.w, q.v.w, q.p.w);
  *reinterpret_cast<float4*>(s.m + i) = q.m;
  *reinterpret_cast<float4*>(s.v + i) = q.v;
  *reinterpret_cast<float4*>(s.param + i) = q.p;
  if (s.compute != nullptr) {
    const auto pair = [](float lo, float hi) {
      return static_cast<uint32_t>(float_to_bf16(lo).bits) | static_cast<uint32_t>(float_to_bf16(hi).bits) << 16;
    };
    *reinterpret_cast<uint2*>(s.compute + i) = make_uint2(pair(q.p.x, q.p.y), pair(q.p.z, q.p.w));
  }
}

__device__ __forceinline__ void update_one(const AdamWHyper& h, double scale, const AdamWSlot& s, int64_t i) {
  float m = s.m[i], v = s.v[i], p = s.param[i];
  adamw_element(h, scale, s.weight_decay, s.grad[i], m, v, p);
  s.m[i] = m;
  s.v[i] = v;
  s.param[i] = p;
  if (s.compute != nullptr) s.compute[i] = float_to_bf16(p).bits;
}

// The elements of [begin, end) before the first at which every operand allows Quad accesses (grad, m,
// v and param 16-byte aligned, compute 8), at most 3; -1 when no element does (operands misaligned
// unlike each other), and the chunk then goes one element at a time. Fresh tensors are aligned, so a
// chunk of a whole tensor has none.
__device__ __forceinline__ int64_t quad_head(const AdamWSlot& s, int64_t begin) {
  const auto at = [](const void* base, int64_t i, int64_t bytes) {
    return reinterpret_cast<uintptr_t>(static_cast<const char*>(base) + i * bytes);
  };
  const int64_t head = static_cast<int64_t>((16 - at(s.param, begin, 4) % 16) % 16 / 4);
  const int64_t first = begin + head;
  const bool aligned = at(s.param, first, 4) % 16 == 0 && at(s.grad, first, 4) % 16 == 0 &&
                       at(s.m, first, 4) % 16 == 0 && at(s.v, first, 4) % 16 == 0 &&
                       (s.compute == nullptr || at(s.compute, first, 2) % 8 == 0);
  return aligned ? head : -1;
}

// Each thread updates Quads kThreads apart, loading the next Quad before it computes the current one,
// so that a warp always has its next 64 bytes of reads in flight while its double math runs (the
// update costs about as many SM cycles as its 30 bytes take at full bandwidth; see
// bench/memory_bench.cc). A head and a tail of fewer than 4 elements go one element at a time.
__global__ void __launch_bounds__(kThreads) adamw_chunks(const AdamWSlot* slots, const TensorChunk* chunks,
                                                         AdamWHyper h, const double* norm_sq) {
  const TensorChunk c = chunks[blockIdx.x];
  const AdamWSlot s = slots[c.slot];
  double scale = 1.0;
  if (h.max_norm > 0) {
    const double norm = sqrt(*norm_sq);
    if (norm > h.max_norm) scale = h.max_norm / norm;
  }
  const int64_t head = quad_head(s, c.begin);
  if (head < 0) {
    for (int64_t i = c.begin + threadIdx.x; i < c.end; i += kThreads) update_one(h, scale, s, i);
    return;
  }
  const int64_t first = c.begin + head < c.end ? c.begin + head : c.end;
  const int64_t quads = (c.end - first) / 4;
  if (threadIdx.x < first - c.begin) update_one(h, scale, s, c.begin + threadIdx.x);
  const int64_t tail = first + 4 * quads;
  if (threadIdx.x < c.end - tail) update_one(h, scale, s, tail + threadIdx.x);
  int64_t k = threadIdx.x;
  Quad current;
  if (k < quads) current = load_quad(s, first + 4 * k);
  while (k < quads) {
    const int64_t next = k + kThreads;
    Quad ahead;
    if (next < quads) ahead = load_quad(s, first + 4 * next);
    update_and_store_quad(h, scale, s, first + 4 * k, current);
    current = ahead;
    k = next;
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
