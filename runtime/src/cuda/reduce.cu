// Sums over the middle of [outer, n, inner] and the sum of squares (reduce.h). Two kernels cover
// every shape, chosen by the shape alone (Note [Deterministic reductions] in block_reduce.cuh):
//   - long contiguous rows (inner == 1, n >= kLongRow): a block per chunk of kRowChunk elements of a
//     row, reduced in the block;
//   - everything else: a thread per (o, chunk of kColumnChunk rows, i), summing its chunk in row
//     order, adjacent threads on adjacent i (coalesced).
// When a row needs more than one chunk the chunk sums go to scratch and finish_column_sums_kernel adds
// them in an order fixed by the shape. All sums are in double, like the CPU's, so results match it up to the final
// rounding.
#include "cuda/block_reduce.cuh"
#include "cuda/cuda_check.h"
#include "cuda/reduce.h"

namespace dtrn::cuda {
namespace {

constexpr int64_t kLongRow = 1024;
constexpr int64_t kRowChunk = 16384;
constexpr int64_t kColumnChunk = 128;
constexpr int kRowThreads = 256;

struct SumPlan {
  bool rows;       // the block-per-chunk kernel
  int64_t chunk;   // elements of the reduced dimension per chunk
  int64_t splits;  // chunks per row: ceil(n / chunk)
};

SumPlan plan_sum(int64_t n, int64_t inner) {
  SumPlan plan;
  plan.rows = inner == 1 && n >= kLongRow;
  plan.chunk = plan.rows ? kRowChunk : kColumnChunk;
  plan.splits = (n + plan.chunk - 1) / plan.chunk;
  return plan;
}

struct Identity {
  __device__ __forceinline__ double operator()(double v) const { return v; }
};
struct Square {
  __device__ __forceinline__ double operator()(double v) const { return v * v; }
};

// Block b sums f(x[row o, chunk s]) with o = b / splits, s = b % splits, into out[b].
template <typename T, typename Out, typename F>
__global__ void sum_row_chunks_kernel(const T* x, int64_t n, int64_t chunk, int64_t splits, Out* out,
                                      F f) {
  const int64_t o = blockIdx.x / splits, s = blockIdx.x % splits;
  const T* row = x + o * n;
  const int64_t end = s * chunk + chunk < n ? s * chunk + chunk : n;
  double acc = 0;
  for (int64_t j = s * chunk + threadIdx.x; j < end; j += blockDim.x) {
    acc += f(static_cast<double>(to_compute(row[j])));
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = from_double<Out>(acc);
}

// out[(o * splits + s) * inner + i] = sum over the rows j of chunk s of x[o, j, i].
template <typename T, typename Out>
__global__ void sum_column_chunks_kernel(const T* x, int64_t outer, int64_t n, int64_t inner,
                                         int64_t chunk, int64_t splits, Out* out) {
  const int64_t total = outer * splits * inner;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = t % inner, r = t / inner;
    const int64_t s = r % splits, o = r / splits;
    const int64_t begin = s * chunk, end = begin + chunk < n ? begin + chunk : n;
    const T* p = x + (o * n + begin) * inner + i;
    double acc = 0;
    for (int64_t j = begin; j < end; ++j, p += inner) acc += static_cast<double>(to_compute(*p));
    out[t] = from_double<Out>(acc);
  }
}

template <typename T>
void sum_dim_typed(const T* x, int64_t outer, int64_t n, int64_t inner, T* out, double* scratch,
                   cudaStream_t stream) {
  const SumPlan plan = plan_sum(n, inner);
  if (plan.rows) {
    const int64_t blocks = outer * plan.splits;
    if (plan.splits == 1) {
      sum_row_chunks_kernel<<<blocks, kRowThreads, 0, stream>>>(x, n, plan.chunk, plan.splits, out,
                                                                 Identity{});
    } else {
      sum_row_chunks_kernel<<<blocks, kRowThreads, 0, stream>>>(x, n, plan.chunk, plan.splits,
                                                                 scratch, Identity{});
    }
  } else {
    const int64_t total = outer * plan.splits * inner;
    if (plan.splits == 1) {
      sum_column_chunks_kernel<<<elementwise_blocks(total), kElementwiseThreads, 0, stream>>>(
          x, outer, n, inner, plan.chunk, plan.splits, out);
    } else {
      sum_column_chunks_kernel<<<elementwise_blocks(total), kElementwiseThreads, 0, stream>>>(
          x, outer, n, inner, plan.chunk, plan.splits, scratch);
    }
  }
  CUDA_CHECK_LAUNCH();
  if (plan.splits > 1) {
    launch_finish_column_sums(scratch, outer, plan.splits, inner, out, stream);
    CUDA_CHECK_LAUNCH();
  }
}

// *result = sum of partial[0, count), by one block in a fixed order.
__global__ void sum_partials_kernel(const double* partial, int64_t count, double* result) {
  double acc = 0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) acc += partial[k];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *result = acc;
}

}  // namespace

size_t sum_dim_scratch_bytes(int64_t outer, int64_t n, int64_t inner) {
  const SumPlan plan = plan_sum(n, inner);
  return plan.splits > 1 ? static_cast<size_t>(outer * plan.splits * inner) * sizeof(double) : 0;
}

void launch_sum_dim(ElemType type, const void* x, int64_t outer, int64_t n, int64_t inner, void* out,
                    void* scratch, cudaStream_t stream) {
  if (outer * inner == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    sum_dim_typed(static_cast<const T*>(x), outer, n, inner, static_cast<T*>(out),
                  static_cast<double*>(scratch), stream);
  });
}

int64_t sum_squares_scratch_doubles(int64_t n) { return (n + kRowChunk - 1) / kRowChunk; }

void launch_sum_squares(ElemType type, const void* x, int64_t n, double* scratch, double* result,
                        cudaStream_t stream) {
  const int64_t chunks = sum_squares_scratch_doubles(n);
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    sum_row_chunks_kernel<<<chunks, kRowThreads, 0, stream>>>(static_cast<const T*>(x), n, kRowChunk,
                                                               chunks, scratch, Square{});
  });
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, stream>>>(scratch, chunks, result);
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
