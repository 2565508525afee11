// The differentiable ops of dtrn's runtime. Each takes and returns Tensors on one device, records its
// backward when an input requires grad (autograd.h), and dispatches to that device's backend kernel.
// Floating ops accept f64 and f32 on the CPU (f64 for gradient checks); the CUDA backend adds bf16.
//
// Shape letters, fixed throughout dtrn:
//   B batch, T sequence length, C channels (d_model), H query heads, G key/value heads (H % G == 0),
//   D head dimension, V vocabulary, N a flat count of rows (tokens), S sequences in a packed batch.
// Shape mismatches throw dtrn::Error naming the op and both shapes.
#pragma once

#include <cstdint>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

// ---- Elementwise. Binary ops broadcast numpy-style; gradients are summed back to each input's shape.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double alpha);       // alpha * x
Tensor add_scalar(const Tensor& x, double beta);   // x + beta
Tensor silu(const Tensor& x);                      // x * sigmoid(x)
Tensor swiglu(const Tensor& gate, const Tensor& up);  // silu(gate) * up, same shapes

// ---- Reductions.
Tensor sum(const Tensor& x);                                 // -> [] (a scalar)
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums `x` down to `shape` over broadcast dimensions (the adjoint of broadcasting).
Tensor sum_to_shape(const Tensor& x, const Shape& shape);

// ---- Matrix products.
// a: [..., M, K] (or [..., K, M] with trans_a), b: [..., K, N] (or [..., N, K] with trans_b) -> [..., M, N].
// Leading (batch) dimensions must match, or b may be 2-D and is then shared by every batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x: [..., in], weight: [out, in] (Hugging Face / PyTorch layout), bias: [out] or undefined -> [..., out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// x: [..., in], weights[i]: [out_i, in] -> {linear(x, weights[i])}: one input read by several weights (a
// block's Q, K and V, or the MLP's gate and up) as one node, whose backward sums x's gradient inside the
// products (dx = g_0 W_0, then dx += g_i W_i; matmul.cc) instead of one add per extra consumer. Outputs
// without a gradient are skipped; each weight's gradient is linear's. The sum's rounding differs from
// that of separate linears and adds (on a GPU it rounds once), so results match them within rounding.
std::vector<Tensor> linears(const Tensor& x, const std::vector<Tensor>& weights);
// linear(silu(x), weight, bias) and linear(swiglu(gate, up), weight), holding only the activation's
// inputs for the backward (the activation is recomputed there): the router's hidden layer and the MLP's
// down projection, whose activations would otherwise be kept twice. swiglu_linear adds `residual` (the
// output's shape and dtype) when it is given, inside the product (the MLP's residual add: the product
// reads it as its C, with one rounding of the sum on a GPU where a separate add would round twice).
Tensor silu_linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor swiglu_linear(const Tensor& gate, const Tensor& up, const Tensor& weight,
                     const Tensor& residual = Tensor());

// ---- Indexing along one dimension.
// weight: [V, C], ids: i32/i64 [...] -> [..., C]. Backward scatter-adds into the weight's gradient.
Tensor embedding(const Tensor& weight, const Tensor& ids);
// x: [..., n, ...] with `index` (i32/i64 [m], values in [0, n)) along `dim` -> [..., m, ...].
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// base + scatter: out = base; out[index[i]] += src[i] along `dim` (repeated indices accumulate).
Tensor index_add(const Tensor& base, int64_t dim, const Tensor& index, const Tensor& src);
// Rows of several parts placed into one tensor: parts[i] [m_i, ...] at rows indices[i] (i32/i64 [m_i]) of
// an output [rows, ...]; indices are distinct across all parts; rows no index names are 0. The inverse
// of gathering a partition (a D block's routed and bypassed tokens); the backward gathers.
Tensor scatter_rows(const std::vector<Tensor>& parts, const std::vector<Tensor>& indices, int64_t rows);
// Rows of x [n, ...] at distinct indices (i32/i64 [m], values in [0, n)) -> [m, ...]: index_select along
// dim 0 whose backward scatters the rows into zeros instead of adding them (no sort, no accumulation).
Tensor gather_rows(const Tensor& x, const Tensor& index);
// A D block's two paths merged before W_O (dtrnet-spec.md rule 6, by the linearity of W_O): o [R, H*D]
// (attention of the routed tokens, in the order of `routed`), v [N, G*D] (W_V of every token), p [N]
// (the attention path's scale: f32, f64 for f64 v), routed [R] and bypass [N - R] (i32, a partition of
// 0..N-1) -> y [N, H*D] with y[routed[j]] = p * o[j] and y[bypass[j]] = (1 - p) * v's row expanded to H
// heads (query head h reads KV head h / (H / G)). Differentiable in o, v and p. One pass over the rows,
// forward and backward: what the gathers, broadcasts and scatters of the two paths would cost many.
Tensor combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed, const Tensor& bypass,
                     int64_t heads);
Tensor concat(const std::vector<Tensor>& parts, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// ---- Neural-network ops.
// x: [..., C], weight: [C] -> x / sqrt(mean(x^2) + eps) * weight.
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps);
// A residual add and the RMSNorm that reads its sum, fused (a block's x + attention and norm_post):
// sum = x + delta (x and delta of one shape [..., C] and dtype), normed = rmsnorm(sum, weight, eps).
// One kernel forward; one node for both outputs, whose backward writes d(x) = d(delta) = d(sum) +
// the norm's dx in one kernel (plus dweight as rmsnorm's). It rounds where add() then rmsnorm()
// round: sum to the dtype before the norm's statistics, the norm's dx to the dtype before the two
// gradients meet. So its results and gradients are bit-identical to add + rmsnorm on the same
// backend (tests/runtime/add_rmsnorm_test.cc) whenever `sum` has at most one consumer of its own:
// with more, the unfused graph might add the norm's dx between theirs instead of last.
struct ResidualNorm {
  Tensor sum;
  Tensor normed;
};
ResidualNorm add_rmsnorm(const Tensor& x, const Tensor& delta, const Tensor& weight, double eps);
// rmsnorm that also passes its input on: sum = x (a handle on x's storage), normed = rmsnorm(x, weight,
// eps). Use `sum` wherever x is read besides the norm (a block's residual and router): the gradients sent
// to it then meet the norm's dx in add_rmsnorm's backward kernel instead of in a separate add. The same
// values and, as add_rmsnorm's, the same gradients as x and rmsnorm(x) whenever `sum` has one consumer.
ResidualNorm rmsnorm_keep(const Tensor& x, const Tensor& weight, double eps);
// x: [N, H, D] (D even), positions: i32/i64 [N]. Rotate-half RoPE (Llama / Hugging Face layout): pairs
// (i, i + D/2) rotate by angle positions[n] * theta^(-2i/D).
Tensor rope(const Tensor& x, const Tensor& positions, double theta);
// Softmax over the last dimension.
Tensor softmax(const Tensor& x);
// log(sum(exp(x))) over the last dimension of x [N, C] -> [N] (f32 for f32 and bf16 x, f64 for f64).
// The backward is grad * softmax(x).
Tensor logsumexp(const Tensor& x);
// Causal attention over packed variable-length sequences (the flash-attn "varlen" form).
// q: [N, H, D], k, v: [N, G, D]; cu_seqlens: i32 [S+1], 0 = cu[0] <= ... <= cu[S] = N. Within sequence s
// (rows cu[s]..cu[s+1]-1, in position order) row i attends to rows j <= i of the same sequence only.
// Query head h reads key/value head h / (H / G). Scale 1/sqrt(D). -> [N, H, D]. cu_seqlens lives on
// q's device; on a GPU it is never read back to the host, so invalid offsets there are not reported
// (the rows they leave out are unspecified).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens);
// Dense causal attention: q [B, T, H, D], k, v [B, T, G, D] -> [B, T, H, D]; attention() with S = B.
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v);
// Mean cross-entropy over rows whose target != ignore_index. logits: [N, V], targets: i32/i64 [N].
// Only the first `num_classes` logits take part (the rest is vocabulary padding); -1 means all V.
// Returns an f32/f64 scalar; 0 when every row is ignored. targets may be a CPU tensor for logits on
// another device (read there, uploaded without a synchronisation).
// When the logits need a gradient, the forward makes it too, in the same pass over each row, for the
// upstream gradient `expected_grad` (what backward() will send: 1 for loss.backward(), the trainer's
// 1 / accumulation steps). The backward hands that gradient on when what it receives is known on the
// host to be expected_grad (Tensor::known_value); any other upstream costs one more pass that scales
// it (rounding bf16 logits' gradient twice). The logits themselves are not kept for the backward.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     int64_t num_classes = -1, double expected_grad = 1.0);

}  // namespace dtrn
