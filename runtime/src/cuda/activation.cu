// Pointwise training kernels: affine, SiLU, SwiGLU and their backwards (activation.h). One generic
// grid-stride kernel maps In input arrays to Out output arrays through a functor on compute-type
// values; when every array is 16-byte aligned it moves 16 bytes per access (4 f32 or 8 bf16).
// The formulas are the CPU's (cpu/elementwise.cc) in the same operation order; affine is exact to
// the bit, the sigmoid-based ones differ from the CPU only through the device's expf.
#include "cuda/activation.h"
#include "cuda/compute.cuh"
#include "cuda/cuda_check.h"

namespace dtrn::cuda {
namespace {

template <typename T, int In, int Out>
struct Operands {
  const T* in[In];
  T* out[Out];
};

template <int W, typename T, int In, int Out, typename Op>
__global__ void map_kernel(Operands<T, In, Out> args, int64_t n, Op op) {
  using M = Compute<T>;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t chunks = n / W;
  for (int64_t c = first; c < chunks; c += stride) {
    Chunk<T, W> a[In], b[Out];
#pragma unroll
    for (int k = 0; k < In; ++k) a[k] = reinterpret_cast<const Chunk<T, W>*>(args.in[k])[c];
#pragma unroll
    for (int e = 0; e < W; ++e) {
      M x[In], y[Out];
#pragma unroll
      for (int k = 0; k < In; ++k) x[k] = to_compute(a[k].v[e]);
      op(x, y);
#pragma unroll
      for (int k = 0; k < Out; ++k) b[k].v[e] = from_compute<T>(y[k]);
    }
#pragma unroll
    for (int k = 0; k < Out; ++k) reinterpret_cast<Chunk<T, W>*>(args.out[k])[c] = b[k];
  }
  // The n % W elements past the last whole chunk.
  for (int64_t i = chunks * W + first; i < n; i += stride) {
    M x[In], y[Out];
#pragma unroll
    for (int k = 0; k < In; ++k) x[k] = to_compute(args.in[k][i]);
    op(x, y);
#pragma unroll
    for (int k = 0; k < Out; ++k) args.out[k][i] = from_compute<T>(y[k]);
  }
}

template <typename M>
__device__ __forceinline__ M sigmoid(M x) {
  return M(1) / (M(1) + exp_of(-x));
}

template <typename M>
struct AffineOp {
  M alpha, beta;
  __device__ void operator()(const M (&x)[1], M (&y)[1]) const {
    y[0] = add_rn(mul_rn(alpha, x[0]), beta);
  }
};

struct SiluOp {
  template <typename M>
  __device__ void operator()(const M (&x)[1], M (&y)[1]) const {
    y[0] = x[0] * sigmoid(x[0]);
  }
};

// d/dx x s(x) = s(x) (1 + x (1 - s(x))); inputs x, grad; outputs dx and, for Out = 2, the activation
// x s(x) (SiluOp's expression, so the same bits).
template <int Out>
struct SiluBackwardOp {
  template <typename M>
  __device__ void operator()(const M (&in)[2], M (&out)[Out]) const {
    const M x = in[0], s = sigmoid(x);
    out[0] = in[1] * s * (M(1) + x * (M(1) - s));
    if constexpr (Out == 2) out[1] = x * s;
  }
};

// Inputs gate, up.
struct SwigluOp {
  template <typename M>
  __device__ void operator()(const M (&in)[2], M (&out)[1]) const {
    out[0] = in[0] * sigmoid(in[0]) * in[1];
  }
};

// Inputs gate, up, grad; outputs dgate, dup and, for Out = 3, the activation (SwigluOp's expression,
// so the same bits).
template <int Out>
struct SwigluBackwardOp {
  template <typename M>
  __device__ void operator()(const M (&in)[3], M (&out)[Out]) const {
    const M g = in[0], u = in[1], d = in[2], s = sigmoid(g);
    out[1] = d * g * s;
    out[0] = d * u * s * (M(1) + g * (M(1) - s));
    if constexpr (Out == 3) out[2] = g * s * u;
  }
};

template <typename T, int In, int Out>
bool all_aligned16(const Operands<T, In, Out>& args) {
  bool aligned = true;
  for (int k = 0; k < In; ++k) aligned = aligned && reinterpret_cast<uintptr_t>(args.in[k]) % 16 == 0;
  for (int k = 0; k < Out; ++k) aligned = aligned && reinterpret_cast<uintptr_t>(args.out[k]) % 16 == 0;
  return aligned;
}

template <typename T, int In, int Out, typename Op>
void launch_map(const Operands<T, In, Out>& args, int64_t n, Op op, cudaStream_t stream) {
  constexpr int W = kChunkElems<T>;
  if (all_aligned16(args)) {
    map_kernel<W><<<elementwise_blocks(n / W + 1), kElementwiseThreads, 0, stream>>>(args, n, op);
  } else {
    map_kernel<1><<<elementwise_blocks(n), kElementwiseThreads, 0, stream>>>(args, n, op);
  }
}

// Runs body(T{}) for the floating element type, then checks the launch.
template <typename Body>
void dispatch_and_check(ElemType type, int64_t n, Body&& body) {
  if (n == 0) return;
  dispatch_floating_elem(type, body);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_affine(ElemType type, const void* x, double alpha, double beta, void* out, int64_t n,
                   cudaStream_t stream) {
  dispatch_and_check(type, n, [&](auto tag) {
    using T = decltype(tag);
    using M = Compute<T>;
    const Operands<T, 1, 1> args{{static_cast<const T*>(x)}, {static_cast<T*>(out)}};
    launch_map(args, n, AffineOp<M>{static_cast<M>(alpha), static_cast<M>(beta)}, stream);
  });
}

void launch_silu(ElemType type, const void* x, void* out, int64_t n, cudaStream_t stream) {
  dispatch_and_check(type, n, [&](auto tag) {
    using T = decltype(tag);
    const Operands<T, 1, 1> args{{static_cast<const T*>(x)}, {static_cast<T*>(out)}};
    launch_map(args, n, SiluOp{}, stream);
  });
}

void launch_silu_backward(ElemType type, const void* x, const void* grad, void* dx, void* out,
                          int64_t n, cudaStream_t stream) {
  dispatch_and_check(type, n, [&](auto tag) {
    using T = decltype(tag);
    const T* in_x = static_cast<const T*>(x);
    const T* in_grad = static_cast<const T*>(grad);
    if (out == nullptr) {
      const Operands<T, 2, 1> args{{in_x, in_grad}, {static_cast<T*>(dx)}};
      launch_map(args, n, SiluBackwardOp<1>{}, stream);
    } else {
      const Operands<T, 2, 2> args{{in_x, in_grad}, {static_cast<T*>(dx), static_cast<T*>(out)}};
      launch_map(args, n, SiluBackwardOp<2>{}, stream);
    }
  });
}

void launch_swiglu(ElemType type, const void* gate, const void* up, void* out, int64_t n,
                   cudaStream_t stream) {
  dispatch_and_check(type, n, [&](auto tag) {
    using T = decltype(tag);
    const Operands<T, 2, 1> args{{static_cast<const T*>(gate), static_cast<const T*>(up)},
                                 {static_cast<T*>(out)}};
    launch_map(args, n, SwigluOp{}, stream);
  });
}

void launch_swiglu_backward(ElemType type, const void* gate, const void* up, const void* grad,
                            void* dgate, void* dup, void* out, int64_t n, cudaStream_t stream) {
  dispatch_and_check(type, n, [&](auto tag) {
    using T = decltype(tag);
    const T* in_gate = static_cast<const T*>(gate);
    const T* in_up = static_cast<const T*>(up);
    const T* in_grad = static_cast<const T*>(grad);
    T* d_gate = static_cast<T*>(dgate);
    T* d_up = static_cast<T*>(dup);
    if (out == nullptr) {
      const Operands<T, 3, 2> args{{in_gate, in_up, in_grad}, {d_gate, d_up}};
      launch_map(args, n, SwigluBackwardOp<2>{}, stream);
    } else {
      const Operands<T, 3, 3> args{{in_gate, in_up, in_grad}, {d_gate, d_up, static_cast<T*>(out)}};
      launch_map(args, n, SwigluBackwardOp<3>{}, stream);
    }
  });
}

}  // namespace dtrn::cuda
