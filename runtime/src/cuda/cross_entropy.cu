// Cross-entropy over a padded vocabulary (softmax.h): a block per row, V = 50304 wide in practice.
// The forward reads the row's first num_classes logits once, keeping an online (max, sum) state
// (online_softmax.cuh) per thread, reduces it in a fixed tree and writes the row's loss and
// log-sum-exp. The backward reads the row again and writes coef * (softmax - onehot), 0 past
// num_classes. The fused kernel does both (the op's forward when the logits need a gradient, ops.h):
// rows that fit in shared memory are staged there, so they cross DRAM once; longer or unaligned rows
// are read twice, the second time mostly from L2. Either may write the gradient over the logits.
// Rows whose 16-byte alignment allows it move 16 bytes per access.
#include <type_traits>

#include "cuda/attention_mma.cuh"  // cp_async_16
#include "cuda/cuda_check.h"
#include "cuda/online_softmax.cuh"
#include "cuda/softmax.h"

namespace dtrn::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
using Stat = Compute<T>;

// exp(x - lse), the row's softmax probability of a logit x.
template <typename M>
__device__ __forceinline__ double probability(M x, double lse) {
  return exp_term(static_cast<M>(static_cast<double>(x) - lse));
}

// The row's gradient: coef * (softmax - onehot) over the classes, 0 over the padding.
template <int W, typename T>
__device__ __forceinline__ void write_gradient_row(const T* xr, T* dr, int64_t cols,
                                                   int64_t num_classes, int64_t target, double lse,
                                                   double coef) {
  transform_row<W>(xr, dr, cols, [&](int64_t i, T v) {
    if (i >= num_classes) return from_double<T>(0.0);
    const double onehot = i == target ? 1.0 : 0.0;
    return from_double<T>(coef * (probability(to_compute(v), lse) - onehot));
  });
}

template <int W, typename T>
__device__ __forceinline__ void zero_row(T* dr, int64_t cols) {
  transform_row<W>(dr, dr, cols, [](int64_t, T) { return from_double<T>(0.0); });
}

// The row's log-sum-exp over its classes (every thread gets it).
template <int W, typename T>
__device__ __forceinline__ double row_log_sum_exp(const T* xr, int64_t num_classes) {
  using M = Compute<T>;
  MaxSum<M> st = empty_max_sum<M>();
  visit_row<W>(xr, num_classes, [&](int64_t, T v) { add_element(st, to_compute(v)); });
  return log_sum_exp(block_reduce(st, CombineMaxSum{}, empty_max_sum<M>()));
}

template <int W, typename T, typename Target>
__global__ void cross_entropy_kernel(const T* logits, const Target* targets, int64_t cols,
                                     int64_t num_classes, int64_t ignore_index, Stat<T>* losses,
                                     Stat<T>* lse) {
  const int64_t row = blockIdx.x;
  const int64_t t = static_cast<int64_t>(targets[row]);
  if (t == ignore_index) {  // the whole block leaves: no barrier is skipped by part of it
    if (threadIdx.x == 0) losses[row] = lse[row] = Stat<T>(0);
    return;
  }
  const T* xr = logits + row * cols;
  const double l = row_log_sum_exp<W>(xr, num_classes);
  if (threadIdx.x == 0) {
    losses[row] = static_cast<Stat<T>>(l - static_cast<double>(to_compute(xr[t])));
    lse[row] = static_cast<Stat<T>>(l);
  }
}

template <int W, typename T, typename Target, typename Grad>
__global__ void cross_entropy_backward_kernel(const T* logits, const Target* targets, int64_t cols,
                                              int64_t num_classes, int64_t ignore_index,
                                              const Stat<T>* lse, const Grad* grad, double scale,
                                              T* dlogits) {
  const int64_t row = blockIdx.x;
  const int64_t t = static_cast<int64_t>(targets[row]);
  T* dr = dlogits + row * cols;
  if (t == ignore_index) {
    zero_row<W>(dr, cols);
    return;
  }
  const double coef = static_cast<double>(*grad) * scale;
  write_gradient_row<W>(logits + row * cols, dr, cols, num_classes, t,
                        static_cast<double>(lse[row]), coef);
}

template <int W, typename T, typename Target>
__global__ void cross_entropy_fused_kernel(const T* logits, const Target* targets, int64_t cols,
                                           int64_t num_classes, int64_t ignore_index, double scale,
                                           Stat<T>* losses, Stat<T>* lse, T* dlogits) {
  const int64_t row = blockIdx.x;
  const int64_t t = static_cast<int64_t>(targets[row]);
  T* dr = dlogits + row * cols;
  if (t == ignore_index) {
    if (threadIdx.x == 0) losses[row] = lse[row] = Stat<T>(0);
    zero_row<W>(dr, cols);
    return;
  }
  const T* xr = logits + row * cols;
  // Read before row_log_sum_exp's barriers, hence before any thread overwrites the row.
  const double target_logit = threadIdx.x == 0 ? static_cast<double>(to_compute(xr[t])) : 0.0;
  const double l = row_log_sum_exp<W>(xr, num_classes);
  if (threadIdx.x == 0) {
    losses[row] = static_cast<Stat<T>>(l - target_logit);
    lse[row] = static_cast<Stat<T>>(l);
  }
  write_gradient_row<W>(xr, dr, cols, num_classes, t, l, scale);
}

// The fused kernel for rows that fit in shared memory: each row crosses DRAM once. A thread copies its
// chunks (16 bytes each, chunk c of thread c mod blockDim) into the block's stage, all in flight at
// once (cp.async), then folds them into its (max, sum); after the block's reduction it reads the same
// chunks back from the stage to write the gradient. Two blocks share an SM for V up to 56k bf16 logits, so one block's loads
// overlap the other's reduction and writes. In place is safe: a thread writes only chunks it staged.
//
// Its arithmetic is lighter than the two-kernel path's, whose per-element f32 <-> f64 conversions made
// it compute-bound once the row crossed DRAM only once: for f32 compute (bf16 and f32 logits) a chunk's
// exponentials are summed in f32 (at most 8 terms of at most 1) before the running sum in double takes
// them, and the gradient is formed in f32 from the log-sum-exp rounded to f32. Against the double
// formulas that moves p by about 2^-24 * |x - lse| relative (under 1e-6 for logits within 16 of the
// log-sum-exp) and the log-sum-exp by under 1e-6: inside what the tests allow the GPU against the CPU.
constexpr int kStagedThreads = 512;
constexpr int64_t kStageBytes = 112 * 1024;
constexpr float kLog2e = 1.4426950408889634f;

// Note [bf16 exponentials]
// Once the row crosses DRAM once, the staged kernel is bound by its instructions (two exponentials an
// element). For bf16 logits it forms each one as exp2f of a single fused multiply-add: exp(x - m) =
// 2^(x log2 e - m log2 e), and the gradient c exp(x - lse) = 2^(x log2 e + (ln c - lse) log2 e) for
// every class but the target (c > 0). The fma rounds its argument once, by 2^-24 of at most |x - lse|
// log2 e (about 40 for a row of 50k classes), which moves the exponential by under 2e-6 relative; exp2f
// adds 2 ulp. Far below the bf16 gradient's own rounding (2^-9), and in the log-sum-exp under 2e-6
// absolute. f32 and f64 logits keep expf and the formula of the unfused kernels.

// Adds a chunk's elements [0, valid) to the running (max, sum).
template <typename T, int W>
__device__ __forceinline__ void add_chunk(MaxSum<Compute<T>>& st, const Chunk<T, W>& values, int valid) {
  using M = Compute<T>;
  if constexpr (std::is_same_v<M, double>) {
    for (int e = 0; e < W && e < valid; ++e) add_element(st, to_compute(values.v[e]));
  } else {
    float m = negative_infinity<float>();
#pragma unroll
    for (int e = 0; e < W; ++e) {
      if (e < valid) m = fmaxf(m, to_compute(values.v[e]));
    }
    if (m == negative_infinity<float>()) return;  // nothing to add (and no -inf - -inf)
    if (m > st.max) {
      st.sum *= exp_term(st.max - m);
      st.max = m;
    }
    float chunk_sum = 0.0f;
    if constexpr (std::is_same_v<T, Bf16>) {  // exp2 of one fused multiply-add (Note [bf16 exponentials])
      const float shift = -st.max * kLog2e;
#pragma unroll
      for (int e = 0; e < W; ++e) {
        if (e < valid) chunk_sum += exp2f(fmaf(to_compute(values.v[e]), kLog2e, shift));
      }
    } else {
#pragma unroll
      for (int e = 0; e < W; ++e) {
        if (e < valid) chunk_sum += expf(to_compute(values.v[e]) - st.max);
      }
    }
    st.sum += static_cast<double>(chunk_sum);
  }
}

// coef * (softmax - onehot) of one logit x (class i of a row with target t and log-sum-exp lse).
template <typename T>
__device__ __forceinline__ T staged_gradient(T x, int64_t i, int64_t t, Compute<T> lse, Compute<T> coef) {
  using M = Compute<T>;
  const M p = exp_of(to_compute(x) - lse);
  return from_compute<T>(coef * (p - (i == t ? M(1) : M(0))));
}

template <typename T, typename Target>
__global__ void __launch_bounds__(kStagedThreads, 2)
    cross_entropy_staged_kernel(const T* logits, const Target* targets, int64_t cols,
                                int64_t num_classes, int64_t ignore_index, double scale,
                                Stat<T>* losses, Stat<T>* lse, T* dlogits) {
  constexpr int W = kChunkElems<T>;
  using C = Chunk<T, W>;
  using M = Compute<T>;
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  C* stage = reinterpret_cast<C*>(stage_bytes);
  const int64_t row = blockIdx.x;
  const int64_t t = static_cast<int64_t>(targets[row]);
  T* dr = dlogits + row * cols;
  if (t == ignore_index) {
    if (threadIdx.x == 0) losses[row] = lse[row] = Stat<T>(0);
    zero_row<W>(dr, cols);
    return;
  }
  const C* xr = reinterpret_cast<const C*>(logits + row * cols);
  const int64_t chunks = cols / W;
  // Every copy of the thread in flight at once (about 13 of 16 bytes for a 50304-wide bf16 row), then
  // the thread reads back what it copied: no barrier needed until the target's logit.
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) cp_async_16(stage + c, xr + c, true);
  cp_async_commit();
  cp_async_wait<0>();
  MaxSum<M> st = empty_max_sum<M>();
  const int64_t whole = num_classes / W;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const C values = stage[c];
    if (c < whole) {
      add_chunk<T, W>(st, values, W);  // inlined with a constant: no per-element test
    } else {
      const int64_t valid = num_classes - c * W;
      add_chunk<T, W>(st, values, valid > 0 ? static_cast<int>(valid) : 0);
    }
  }
  // block_reduce's barriers also publish the stage (the target's logit was staged by another thread).
  const double l = log_sum_exp(block_reduce(st, CombineMaxSum{}, empty_max_sum<M>()));
  if (threadIdx.x == 0) {
    const T x_t = reinterpret_cast<const T*>(stage)[t];
    losses[row] = static_cast<Stat<T>>(l - static_cast<double>(to_compute(x_t)));
    lse[row] = static_cast<Stat<T>>(l);
  }
  C* out = reinterpret_cast<C*>(dr);
  if constexpr (std::is_same_v<T, Bf16>) {
    if (scale > 0 && isfinite(l)) {  // Note [bf16 exponentials]
      const float shift = static_cast<float>((log(scale) - l) * static_cast<double>(kLog2e));
      const float target_shift = static_cast<float>(-l * static_cast<double>(kLog2e));
      const int64_t whole = num_classes / W;  // chunks with no padding
      const int64_t target_chunk = t / W;
      for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
        const C values = stage[c];
        C result;
        if (c < whole) {  // no per-element test: the padding is only in the last chunks
#pragma unroll
          for (int e = 0; e < W; ++e) {
            result.v[e] = from_compute<T>(exp2f(fmaf(to_compute(values.v[e]), kLog2e, shift)));
          }
        } else {
          const int real = static_cast<int>(num_classes - c * W);  // may be <= 0
#pragma unroll
          for (int e = 0; e < W; ++e) {
            result.v[e] = from_compute<T>(e < real ? exp2f(fmaf(to_compute(values.v[e]), kLog2e, shift)) : 0.0f);
          }
        }
        if (c == target_chunk) {
          const int e = static_cast<int>(t % W);
          const float p = exp2f(fmaf(to_compute(values.v[e]), kLog2e, target_shift));
          result.v[e] = from_compute<T>(static_cast<float>(scale) * (p - 1.0f));
        }
        out[c] = result;
      }
      return;
    }
  }
  const M lse_m = static_cast<M>(l), coef = static_cast<M>(scale);
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const C values = stage[c];
    C result;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const int64_t i = c * W + e;
      result.v[e] = i < num_classes ? staged_gradient(values.v[e], i, t, lse_m, coef) : from_double<T>(0.0);
    }
    out[c] = result;
  }
}

// Calls fn(width, targets) with the chunk width (16-byte accesses when every row pointer allows)
// and the typed target pointer.
template <typename T, typename Fn>
void dispatch_row_kernel(const CrossEntropyArgs& args, bool aligned, Fn&& fn) {
  auto with_targets = [&](auto width) {
    if (args.target_type == ElemType::kI32) {
      fn(width, static_cast<const int32_t*>(args.targets));
    } else {
      fn(width, static_cast<const int64_t*>(args.targets));
    }
  };
  if (aligned) {
    with_targets(std::integral_constant<int, kChunkElems<T>>{});
  } else {
    with_targets(std::integral_constant<int, 1>{});
  }
}

}  // namespace

void launch_cross_entropy(ElemType type, const void* logits, const CrossEntropyArgs& args,
                          void* losses, void* lse, cudaStream_t stream) {
  if (args.rows == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const bool aligned = rows_aligned16(logits, args.cols, sizeof(T));
    dispatch_row_kernel<T>(args, aligned, [&](auto width, auto targets) {
      cross_entropy_kernel<decltype(width)::value><<<args.rows, kThreads, 0, stream>>>(
          static_cast<const T*>(logits), targets, args.cols, args.num_classes, args.ignore_index,
          static_cast<Stat<T>*>(losses), static_cast<Stat<T>*>(lse));
    });
  });
  CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_backward(ElemType type, const void* logits, const CrossEntropyArgs& args,
                                   const void* lse, const void* grad, ElemType grad_type,
                                   double scale, void* dlogits, cudaStream_t stream) {
  if (args.rows == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const bool aligned = rows_aligned16(logits, args.cols, sizeof(T)) &&
                         rows_aligned16(dlogits, args.cols, sizeof(T));
    dispatch_row_kernel<T>(args, aligned, [&](auto width, auto targets) {
      auto launch = [&](const auto* g) {
        cross_entropy_backward_kernel<decltype(width)::value><<<args.rows, kThreads, 0, stream>>>(
            static_cast<const T*>(logits), targets, args.cols, args.num_classes, args.ignore_index,
            static_cast<const Stat<T>*>(lse), g, scale, static_cast<T*>(dlogits));
      };
      if (grad_type == ElemType::kF64) {
        launch(static_cast<const double*>(grad));
      } else {
        launch(static_cast<const float*>(grad));
      }
    });
  });
  CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_fused(ElemType type, const void* logits, const CrossEntropyArgs& args,
                                double scale, void* losses, void* lse, void* dlogits,
                                cudaStream_t stream) {
  if (args.rows == 0) return;
  dispatch_floating_elem(type, [&](auto tag) {
    using T = decltype(tag);
    const bool aligned = rows_aligned16(logits, args.cols, sizeof(T)) &&
                         rows_aligned16(dlogits, args.cols, sizeof(T));
    const int64_t stage_bytes = args.cols * static_cast<int64_t>(sizeof(T));
    dispatch_row_kernel<T>(args, aligned, [&](auto width, auto targets) {
      if constexpr (decltype(width)::value > 1) {
        if (stage_bytes <= kStageBytes) {
          auto* kernel = cross_entropy_staged_kernel<T, std::remove_pointer_t<decltype(targets)>>;
          CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(kStageBytes)));
          kernel<<<args.rows, kStagedThreads, stage_bytes, stream>>>(
              static_cast<const T*>(logits), targets, args.cols, args.num_classes, args.ignore_index,
              scale, static_cast<Stat<T>*>(losses), static_cast<Stat<T>*>(lse), static_cast<T*>(dlogits));
          return;
        }
      }
      cross_entropy_fused_kernel<decltype(width)::value><<<args.rows, kThreads, 0, stream>>>(
          static_cast<const T*>(logits), targets, args.cols, args.num_classes, args.ignore_index,
          scale, static_cast<Stat<T>*>(losses), static_cast<Stat<T>*>(lse), static_cast<T*>(dlogits));
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
