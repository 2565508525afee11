// The kernel table: one Backend per device type, each implementing the kernels below for its memory.
// This is the one dispatch place of the runtime (see ops/*.cc for the callers). A backend that lacks a
// kernel inherits the default, which fails loudly naming the kernel and the backend.
//
// Contract for every kernel: tensors are on the backend's device; inputs are contiguous unless the kernel
// says "strided"; outputs are preallocated and contiguous; floating kernels accept f64 and f32 (CPU),
// f32 and bf16 (CUDA); shapes were validated by the op layer (ops/*.cc), so kernels only assert.
#pragma once

#include <cstdint>
#include <vector>

#include "dtrn/runtime/allocator.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn {

enum class BinaryOp : uint8_t { kAdd, kSub, kMul };

// C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b] for b < batch, row-major. op(A) is M x K, op(B) is K x N.
// A stride of 0 shares one matrix across the batch.
struct GemmArgs {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between consecutive batch matrices
  double alpha = 1.0, beta = 0.0;
};

struct AdamWArgs {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1, bias_correction2;  // 1 - beta^t
  double grad_scale = 1.0;                    // the gradient is read as grad_scale * grad (clipping)
};

// One parameter of a multi-tensor AdamW update (adamw_multi). param, m and v are f32 (f64 in gradient
// checks); grad is f32 (the accumulation buffer, also for bf16 compute copies); compute, when defined,
// is a lower-precision copy of param that the update rewrites (the weights the forward reads).
struct AdamWTensors {
  Tensor param, grad, m, v, compute;
  double weight_decay = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Allocator& allocator() = 0;
  // Page-locked host memory for copies from this device (allocator.h), or null where there is none.
  virtual Allocator* pinned_host_allocator() { return nullptr; }

  // ---- Memory
  virtual void fill(const Tensor& out, double value);
  // dst[i] = src[i] over the common shape; both strided; dtypes may differ (converting).
  virtual void copy(const Tensor& src, const Tensor& dst);
  // Raw bytes between host and this device. Both return once the host buffer may be reused or read;
  // an upload may still be in flight on the device (ordered before any later work on it).
  virtual void copy_from_host(void* dst, const void* src, size_t nbytes);
  virtual void copy_to_host(void* dst, const void* src, size_t nbytes);
  // out[i] = uniform / normal draw number (offset + i) of (seed, stream); see rng.h.
  virtual void fill_random(const Tensor& out, bool normal, double a, double b, uint64_t seed,
                           uint64_t stream, uint64_t offset);

  // ---- Elementwise
  // a and b strided views already broadcast to out's shape (zero strides where broadcast).
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
  virtual void affine(const Tensor& x, double alpha, double beta, const Tensor& out);  // alpha*x + beta
  virtual void silu(const Tensor& x, const Tensor& out);
  virtual void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out);
  // The backwards also write the activation into out where out is defined (bit for bit what silu and
  // swiglu write), for the weight gradient of a product over it (ops/activation_linear.cc).
  virtual void silu_backward(const Tensor& x, const Tensor& grad, const Tensor& dx,
                             const Tensor& out);
  virtual void swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& grad,
                               const Tensor& dgate, const Tensor& dup, const Tensor& out);

  // ---- Reductions: x viewed as [outer, n, inner] -> out [outer, inner], summed over n.
  virtual void sum_dim(const Tensor& x, int64_t outer, int64_t n, int64_t inner, const Tensor& out);
  // Sum of squares of all elements, accumulated in f64 (for gradient norms).
  virtual double sum_squares(const Tensor& x);

  // ---- Matrix products. a and b share a dtype; c has it too, or is f32 for bf16 a and b (CUDA).
  virtual void gemm(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& c);
  // c = alpha op(a) op(b) + residual for one product (args.batch 1, args.beta ignored): the product's C
  // is read from residual (c's shape and dtype, left unchanged) and the sum written to c, so a residual
  // add costs no pass of its own. The default copies residual into c and adds the product with beta 1.
  virtual void gemm_add(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& residual,
                        const Tensor& c);

  // ---- Indexing: x viewed as [outer, n, inner], index [m] -> out [outer, m, inner].
  virtual void index_select(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                            const Tensor& index, const Tensor& out);
  // out viewed as [outer, n, inner] += scatter of src [outer, m, inner] at index [m], in place.
  virtual void index_add(const Tensor& out, int64_t outer, int64_t n, int64_t inner,
                         const Tensor& index, const Tensor& src);

  // ---- Normalisation and position
  // x [N, C], w [C] -> y [N, C], rstd [N] (f32 for f32/bf16 x, f64 for f64 x).
  virtual void rmsnorm(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                       const Tensor& rstd);
  // dx [N, C] is written; dw [C] is written (not accumulated).
  virtual void rmsnorm_backward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                const Tensor& dy, const Tensor& dx, const Tensor& dw);
  // The residual add fused with the norm (ops.h: add_rmsnorm): h = x + delta rounded to the dtype
  // exactly as binary(kAdd) rounds it, then rmsnorm of h into y and rstd. x, delta, h, y [N, C].
  virtual void add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& w, double eps,
                           const Tensor& h, const Tensor& y, const Tensor& rstd);
  // dx = dh + rmsnorm_backward's dx of (h, dy), the latter rounded to the dtype first and the sum
  // rounded as binary(kAdd) rounds it; dw as rmsnorm_backward's. h, dy, dh, dx [N, C]; all written.
  virtual void add_rmsnorm_backward(const Tensor& h, const Tensor& w, const Tensor& rstd,
                                    const Tensor& dy, const Tensor& dh, const Tensor& dx,
                                    const Tensor& dw);
  // x, out [N, H, D]; positions [N]; inverse rotates by the negative angle (the backward).
  virtual void rope(const Tensor& x, const Tensor& positions, double theta, bool inverse,
                    const Tensor& out);

  // ---- Softmax over the last dim: x, y [N, C].
  virtual void softmax(const Tensor& x, const Tensor& y);
  virtual void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx);

  // ---- Packed causal attention (ops.h: attention). lse [H, N] f32 (f64 for f64 inputs) holds each
  // row's log-sum-exp of scaled scores, saved for the backward.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                         double scale, const Tensor& out, const Tensor& lse);
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& cu_seqlens, double scale, const Tensor& out,
                                  const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                  const Tensor& dk, const Tensor& dv);

  // ---- Cross-entropy. logits [N, V]; targets [N], each ignore_index or in [0, num_classes); only the
  // first num_classes columns take part (the rest is vocabulary padding). losses [N] and lse [N] in f32
  // (f64 for f64 logits); ignored rows get loss 0 and lse 0.
  virtual void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                             int64_t num_classes, const Tensor& losses, const Tensor& lse);
  // dlogits = grad * scale * (softmax - onehot) for kept rows; 0 for ignored rows and for padded
  // classes. grad is the upstream gradient: one f32 or f64 element on this device, read there (no
  // host synchronisation); scale is typically 1 / (kept rows).
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets,
                                      int64_t ignore_index, int64_t num_classes, const Tensor& lse,
                                      const Tensor& grad, double scale, const Tensor& dlogits);
  // cross_entropy and cross_entropy_backward with grad 1 in one pass over the logits: writes losses,
  // lse and dlogits = scale * (softmax - onehot). dlogits may be logits itself (in place).
  virtual void cross_entropy_fused(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                   int64_t num_classes, double scale, const Tensor& losses,
                                   const Tensor& lse, const Tensor& dlogits);

  // ---- Optimizer: one AdamW update of param with grad, moments m and v (f32), in place.
  virtual void adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                     const AdamWArgs& args);
  // out (one element, f32; f64 on the CPU) = the sum of squares of every element of every tensor, in a
  // fixed order (deterministic). The global gradient norm without a host round trip per tensor.
  virtual void sum_squares_multi(const std::vector<Tensor>& tensors, const Tensor& out);
  // AdamW on every entry; the gradients are multiplied by min(1, max_norm / sqrt(norm_sq)), norm_sq read
  // where it lies (on the device: no host synchronisation); max_norm <= 0 disables clipping. args'
  // weight_decay and grad_scale are ignored (per entry, and from norm_sq).
  virtual void adamw_multi(const std::vector<AdamWTensors>& entries, const AdamWArgs& args,
                           const Tensor& norm_sq, double max_norm);

  // ---- Accumulation: dst += src elementwise (same numel, both contiguous; src's dtype converts to
  // dst's). Gradient accumulation into leaf buffers, f32 buffers for bf16 leaves.
  virtual void add_into(const Tensor& dst, const Tensor& src);
  // out viewed as [outer, n, inner]: out[:, index[i], :] = src[:, i, :] (indices distinct), in place.
  virtual void index_copy(const Tensor& out, int64_t outer, int64_t n, int64_t inner,
                          const Tensor& index, const Tensor& src);

  // ---- A D block's two paths before W_O (ops.h: combine_paths). o [R, H*D] (the routed tokens'
  // attention), v [N, G*D], p [N] (f32; f64 for f64 v), routed [R] and bypass [N - R] i32 together a
  // partition of 0..N-1. y [N, H*D]: row routed[j] = p * o[j]; row bypass[j] = (1 - p) * v's row with
  // query head h reading KV head h / (H / G). The backward writes d_o [R, H*D], dv [N, G*D] (zero on
  // routed rows) and dp [N] (p's dtype), each row from one thread block in a fixed order.
  virtual void combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                             const Tensor& bypass, int64_t heads, const Tensor& y);
  virtual void combine_paths_backward(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                                      const Tensor& bypass, int64_t heads, const Tensor& dy, const Tensor& d_o,
                                      const Tensor& dv, const Tensor& dp);

  // ---- Token routing (routing.h). mask: i32 [N] of 0/1.
  // mask[i] = p[i] > threshold for p f32 [N].
  virtual void route_threshold(const Tensor& p, double threshold, const Tensor& mask);
  // Sets mask to 1 at `want` distinct positions drawn by a partial Fisher-Yates shuffle of 0..N-1 whose
  // draws are RngStream(seed, stream, offset).next_below(N - i), i = 0..want-1 (the same positions on
  // every backend).
  virtual void route_fallback(const Tensor& mask, int64_t want, uint64_t seed, uint64_t stream,
                              uint64_t offset);
  // Compacts a mask over `rows` rows of `cols` tokens (N = rows * cols) into i32 outputs of capacity N:
  // routed[0..R) the flat indices with mask 1 in increasing order, positions[0..R) their index within
  // the row, bypass[0..N-R) the other indices in increasing order, cu_seqlens [rows + 1] the running
  // count of routed tokens at each row start, count [1] = R.
  virtual void route_compact(const Tensor& mask, int64_t rows, int64_t cols, const Tensor& routed,
                             const Tensor& positions, const Tensor& bypass, const Tensor& cu_seqlens,
                             const Tensor& count);
  // Sorts keys (f32 [N], no NaN) ascending, stably: sorted[i] = keys[order[i]], order i32 [N]. -0.0
  // and +0.0 are equal and keep their order (as CUB's radix sort takes them on the CUDA backend).
  virtual void sort_values(const Tensor& keys, const Tensor& sorted, const Tensor& order);
};

// The backend owning `device`'s memory. Throws when it is not built or no such device exists.
Backend& backend_for(Device device);

// Registered by the CUDA backend (cuda/cuda_backend.cu) when it is built; null otherwise.
Backend* cuda_backend_or_null();

}  // namespace dtrn
