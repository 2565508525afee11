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

// A chunk as single elements [begin, first), whole Quads (four elements, 16-byte accesses of every
// f32 operand, 8 of the bf16 copy) [first, tail), and single elements [tail, end). first is the first
// element at which every operand of the slot (those not null) is so aligned, at most 3 past begin;
// where none is (operands misaligned unlike each other), first = tail = end and the chunk goes one
// element at a time. Fresh tensors are aligned, so a chunk of a whole tensor has no head.
struct ChunkSplit {
  int64_t first, tail;
};

__device__ __forceinline__ ChunkSplit split_chunk(const AdamWSlot& s, const TensorChunk& c) {
  const auto aligned = [](const void* base, int64_t i, int64_t bytes, int64_t to) {
    if (base == nullptr) return true;
    return reinterpret_cast<uintptr_t>(static_cast<const char*>(base) + i * bytes) % to == 0;
  };
  const uintptr_t at = reinterpret_cast<uintptr_t>(s.grad + c.begin);
  const int64_t head = static_cast<int64_t>((16 - at % 16) % 16 / 4);
  const int64_t first = c.begin + head < c.end ? c.begin + head : c.end;
  if (!(aligned(s.grad, first, 4, 16) && aligned(s.param, first, 4, 16) && aligned(s.m, first, 4, 16) &&
        aligned(s.v, first, 4, 16) && aligned(s.compute, first, 2, 8))) {
    return {c.end, c.end};
  }
  return {first, first + (c.end - first) / 4 * 4};
}

__global__ void __launch_bounds__(kThreads) sum_squares_chunks(const AdamWSlot* slots,
                                                               const TensorChunk* chunks, double* partial) {
  const TensorChunk c = chunks[blockIdx.x];
  const AdamWSlot s = slots[c.slot];
  const float* g = s.grad;
  const ChunkSplit split = split_chunk(s, c);
  // The square of an f32 value is exact in double, so each term is exact and only the additions round
  // (as on the CPU); widening costs the FP64 pipe a fraction of the time the 4 bytes take to arrive.
  double total = 0.0;
  const auto add = [&total](float x) {
    const double d = x;
    total += d * d;
  };
  for (int64_t i = c.begin + threadIdx.x; i < split.first; i += kThreads) add(g[i]);
#pragma unroll 4
  for (int64_t i = split.first + 4 * threadIdx.x; i < split.tail; i += 4 * kThreads) {
    const float4 q = *reinterpret_cast<const float4*>(g + i);
    add(q.x);
    add(q.y);
    add(q.z);
    add(q.w);
  }
  for (int64_t i = split.tail + threadIdx.x; i < c.end; i += kThreads) add(g[i]);
  total = block_sum(total);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kThreads) sum_partials(const double* partial, int64_t n, double* out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partial[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
}

// x / d for a bias correction d = 1 - beta^t, skipping the division once d is exactly 1 (in double
// from step 356 for beta 0.9, 730 for 0.95, so for nearly all of a long run): x / 1 is x, the CPU's
// bits either way. d is the same for every thread, so the branch never diverges.
__device__ __forceinline__ double divide_by_correction(double x, double d) {
  return d == 1.0 ? x : __ddiv_rn(x, d);
}

// One element's update: the CPU's expression (cpu/adamw.cc) in double from the f32 values, every
// operation rounded on its own (mul_rn, add_rn and the _rn intrinsics: nvcc would otherwise contract
// products and sums into FMAs, which the CPU build, x86-64 without FMA, does not) and each stored
// value rounded once, so that the GPU and the CPU agree to the last bit. m, v and p are read and
// overwritten.
__device__ __forceinline__ void adamw_element(const AdamWHyper& h, double scale, double weight_decay,
                                              float grad, float& m, float& v, float& p) {
  const double g = mul_rn(scale, static_cast<double>(grad));
  const double md = add_rn(mul_rn(h.beta1, static_cast<double>(m)), mul_rn(1 - h.beta1, g));
  const double vd = add_rn(mul_rn(h.beta2, static_cast<double>(v)), mul_rn(mul_rn(1 - h.beta2, g), g));
  m = static_cast<float>(md);
  v = static_cast<float>(vd);
  const double denom = add_rn(__dsqrt_rn(divide_by_correction(vd, h.bias_correction2)), h.eps);
  const double update = __ddiv_rn(divide_by_correction(md, h.bias_correction1), denom);
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
      const uint32_t low = store_bf16(lo).bits, high = store_bf16(hi).bits;
      return low | high << 16;
    };
    *reinterpret_cast<uint2*>(s.compute + i) = make_uint2(pair(q.p.x, q.p.y), pair(q.p.z, q.p.w));
  }
}

__device__ __forceinline__ void update_one(const AdamWHyper& h, double scale, const AdamWSlot& s,
                                           int64_t i) {
  float m = s.m[i], v = s.v[i], p = s.param[i];
  adamw_element(h, scale, s.weight_decay, s.grad[i], m, v, p);
  s.m[i] = m;
  s.v[i] = v;
  s.param[i] = p;
  if (s.compute != nullptr) s.compute[i] = store_bf16(p).bits;
}

// Each thread updates Quads kThreads apart, loading the next Quad before it computes the current one,
// so that a warp always has its next 64 bytes of reads in flight while its double math runs (the
// update costs about as many SM cycles as its 30 bytes take at full bandwidth; see
// bench/memory_bench.cc). The chunk's single elements (split_chunk) go first.
__global__ void __launch_bounds__(kThreads) adamw_chunks(const AdamWSlot* slots, const TensorChunk* chunks,
                                                         AdamWHyper h, const double* norm_sq) {
  const TensorChunk c = chunks[blockIdx.x];
  const AdamWSlot s = slots[c.slot];
  double scale = 1.0;
  if (h.max_norm > 0) {
    const double norm = sqrt(*norm_sq);
    if (norm > h.max_norm) scale = h.max_norm / norm;
  }
  const ChunkSplit split = split_chunk(s, c);
  for (int64_t i = c.begin + threadIdx.x; i < split.first; i += kThreads) update_one(h, scale, s, i);
  for (int64_t i = split.tail + threadIdx.x; i < c.end; i += kThreads) update_one(h, scale, s, i);
  const int64_t quads = (split.tail - split.first) / 4;
  int64_t k = threadIdx.x;
  Quad current;
  if (k < quads) current = load_quad(s, split.first + 4 * k);
  while (k < quads) {
    const int64_t next = k + kThreads;
    Quad ahead;
    if (next < quads) ahead = load_quad(s, split.first + 4 * next);
    update_and_store_quad(h, scale, s, split.first + 4 * k, current);
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
