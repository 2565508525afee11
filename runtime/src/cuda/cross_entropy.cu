// Cross-entropy over a padded vocabulary (softmax.h): a block per row, V = 50304 wide in practice.
// The forward reads the row's first num_classes logits once, keeping an online (max, sum) state
// (online_softmax.cuh) per thread, reduces it in a fixed tree and writes the row's loss and
// log-sum-exp. The backward reads the row again and writes coef * (softmax - onehot), 0 past
// num_classes; the fused kernel does both with the row still hot in L2 and may write the gradient over
// the logits (the target logit is read before the barrier that precedes any write). Rows whose
// 16-byte alignment allows it move 16 bytes per access.
#include <type_traits>

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
    dispatch_row_kernel<T>(args, aligned, [&](auto width, auto targets) {
      cross_entropy_fused_kernel<decltype(width)::value><<<args.rows, kThreads, 0, stream>>>(
          static_cast<const T*>(logits), targets, args.cols, args.num_classes, args.ignore_index,
          scale, static_cast<Stat<T>*>(losses), static_cast<Stat<T>*>(lse), static_cast<T*>(dlogits));
    });
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace dtrn::cuda
