// T and D blocks. The D block realises real sparsity: only routed tokens are gathered for Q, K and
// attention (packed per sequence, the varlen form); W_V runs once over every token (the bypass needs it
// for the others, and the routed tokens' attention gathers its rows), and each path's p-scaled result
// enters one W_O product over all rows (W_O is linear and shared by both paths). Compute and memory
// scale with the routed count (rule 8). Routing runs where the activations live (routing.h): one read
// of the routed count per D block is the only host synchronisation.
//
// Note [Gradients summed where they are made]
// A tensor read by several ops gets one gradient from each, and the autograd engine adds them (one
// element-wise pass over [N, C] per extra reader). The blocks let the producing kernels do those sums:
// - Q, K and V (in a D block Q and K: V reads every row, they the routed ones) and the MLP's gate and up
//   read u through one linears() node, which sums u's gradient inside its products (dx += g_i W_i).
// - norm_in is rmsnorm_keep: the residual (and in a D block the router) read its passthrough of x, so the
//   gradients they send meet the norm's dx in the norm's backward kernel (add_rmsnorm's).
// - The attention's residual add and norm_post are one op (add_rmsnorm): the sum is written once and its
//   gradient meets the norm's in the same kernel.
// What the engine still adds: in a D block, the router's and the residual's gradients of x, and u's
// from W_V and from the routed rows' gather (tests/model/block_gradient_sums_test.cc counts them).
// The forward computes exactly what the unfused ops would. The gradients are those of the unfused model
// up to rounding: linears' sums round differently from separate products and adds (on a GPU once per
// product rather than twice), and where a passthrough has two readers (a D block's x) the norm's dx is
// added last rather than in the engine's order. Nothing relies on the unfused bits (the model's tests
// compare with tolerances; add_rmsnorm and rmsnorm_keep are bit-exact on their own, ops.h). The MLP's
// residual add stays apart from the next block's norm_in: fusing them would save only the forward's one
// read of the sum, at the cost of passing (sum, normed) pairs across the block boundary; it is instead
// added inside the down projection (swiglu_linear's residual: the product reads it as its C), except
// under TP, where it must follow the reduction over ranks.
#include "dtrn/model/blocks.h"

#include <vector>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {
namespace {

// Attention heads over packed rows: the projections q = W_Q u [N, H*D], k = W_K u [N, G*D] and
// v = W_V u [N, G*D], positions [N], sequence boundaries cu [S+1] -> [N, H*D], before W_O. The head counts
// are the projections' (a TP rank's H/P and G/P heads, or all of them).
Tensor attention_heads(const ModelConfig& c, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& positions, const Tensor& cu_seqlens) {
  const int64_t d = c.head_dim(), n = q.size(0), h = q.size(1) / d, g = k.size(1) / d;
  return attention(rope(q.reshape({n, h, d}), positions, c.rope_theta),
                   rope(k.reshape({n, g, d}), positions, c.rope_theta), v.reshape({n, g, d}), cu_seqlens)
      .reshape({n, h * d});
}

// Attention over packed rows u [N, C] with positions [N] and sequence boundaries cu [S+1] -> [N, C] (a
// TP rank's part of the sum over heads that W_O computes).
Tensor packed_attention(const ModelConfig& c, const AttentionWeights& w, const Tensor& u,
                        const Tensor& positions, const Tensor& cu_seqlens) {
  const std::vector<Tensor> qkv = linears(u, {w.wq, w.wk, w.wv});
  return linear(attention_heads(c, qkv[0], qkv[1], qkv[2], positions, cu_seqlens), w.wo);
}

}  // namespace

Tensor sequence_positions(int64_t batch, int64_t seq, Device device) {
  std::vector<int64_t> pos(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i) pos[i] = i % seq;
  return Tensor::from_ints(pos, {batch * seq}, DType::kI32, device);
}

BlockContext make_block_context(const ModelConfig& c, int64_t batch, int64_t seq, Device device) {
  BlockContext ctx;
  ctx.positions = sequence_positions(batch, seq, device);
  std::vector<int64_t> cu(batch + 1);
  for (int64_t i = 0; i <= batch; ++i) cu[i] = i * seq;
  ctx.cu_seqlens = Tensor::from_ints(cu, {batch + 1}, DType::kI32, device);
  return ctx;
}

Tensor mlp_forward(const MlpWeights& w, const Tensor& u, TensorParallelOps* tp, const Tensor& residual) {
  const Tensor ut = copy_to_tensor_parallel(tp, u);
  // SwiGLU recomputed in backward
  const std::vector<Tensor> gate_up = linears(ut, {w.gate, w.up});
  if (!residual.defined()) return reduce_from_tensor_parallel(tp, swiglu_linear(gate_up[0], gate_up[1], w.down));
  // Without TP the residual add happens inside the down projection; with it, after the reduction.
  if (tp == nullptr) return swiglu_linear(gate_up[0], gate_up[1], w.down, residual);
  return add(residual, reduce_from_tensor_parallel(tp, swiglu_linear(gate_up[0], gate_up[1], w.down)));
}

Tensor dense_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                           const BlockContext* ctx, TensorParallelOps* tp) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2);
  const BlockContext local = ctx ? BlockContext{} : make_block_context(c, b, t, x.device());
  const BlockContext& k = ctx ? *ctx : local;
  const ResidualNorm in = rmsnorm_keep(x, w.norm_in, c.norm_eps);
  Tensor u = copy_to_tensor_parallel(tp, in.normed.reshape({b * t, ch}));
  Tensor a = reduce_from_tensor_parallel(tp, packed_attention(c, w.attn, u, k.positions, k.cu_seqlens));
  const ResidualNorm h = add_rmsnorm(in.sum, a.reshape({b, t, ch}), w.norm_post, c.norm_eps);
  return mlp_forward(w.mlp, h.normed, tp, h.sum);
}

std::vector<double> measured_quantile_levels(double target_fraction) {
  return {0.1, 0.5, 0.9, 1.0 - target_fraction};
}

Tensor router_logits(const RouterWeights& w, const Tensor& x) {
  const int64_t n = x.size(0) * x.size(1);
  Tensor x2 = x.reshape({n, x.size(2)});
  Tensor z = silu_linear(linear(x2, w.w1, w.b1), w.w2, w.b2);  // [N, 2]; silu recomputed in backward
  // Probabilities in at least f32 (rule 2); f64 models (the gradient checks) keep f64.
  return z.dtype() == DType::kF64 ? z : z.to(DType::kF32);
}

Tensor router_p_attn(const RouterWeights& w, const Tensor& x) {
  return softmax(router_logits(w, x)).narrow(1, 0, 1).reshape({x.size(0) * x.size(1)});
}

Tensor routed_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                            const FallbackDraw& fallback, RoutingStats* stats, const RouteControl& control,
                            TensorParallelOps* tp) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2), n = b * t;
  const ResidualNorm in = rmsnorm_keep(x, w.norm_in, c.norm_eps);
  Tensor z = router_logits(w.router, in.sum);  // [N, 2], f32 (f64 in gradient checks)
  Tensor p_attn = softmax(z).narrow(1, 0, 1).reshape({n});
  auto f32 = [](const Tensor& v) { return v.dtype() == DType::kF32 ? v : v.detach().to(DType::kF32); };
  Tensor delta = sub(z.narrow(1, 0, 1), z.narrow(1, 1, 1)).reshape({n});
  // The biased logits z + (b, 0): p computed from them crosses 0.5 exactly where Delta + b crosses 0.
  Tensor z_biased =
      control.use_bias ? concat({add_scalar(z.narrow(1, 0, 1), control.bias), z.narrow(1, 1, 1)}, 1) : z;
  // Rules 3 and 4 (or the controls that replace them): the hard mask (no gradient) and the fallback,
  // on the router's device.
  const TokenRouting r =
      control.use_bias ? route_tokens(f32(add_scalar(delta.detach(), control.bias)), 0.0, b, t, fallback, control.band)
                       : route_tokens(f32(p_attn), 0.5, b, t, fallback, control.band);
  Tensor p_path =
      control.use_bias && control.bias_scales_path ? softmax(z_biased).narrow(1, 0, 1).reshape({n}) : p_attn;

  // Rule 5: computed once. Under TP, u and the path scales enter this rank's heads through copy_to, so
  // that their gradients (the router's included) are summed over the heads of every rank.
  Tensor u = copy_to_tensor_parallel(tp, in.normed.reshape({n, ch}));
  Tensor v = linear(u, w.attn.wv);  // [N, G*D]: the bypass's values, and the routed tokens' V rows
  Tensor p_vec = copy_to_tensor_parallel(tp, p_path);
  const int64_t heads = w.attn.wq.size(0) / c.head_dim();
  Tensor o = Tensor::empty({0, heads * c.head_dim()}, x.dtype(), x.device());
  if (r.count > 0) {
    const std::vector<Tensor> qk = linears(gather_rows(u, r.routed), {w.attn.wq, w.attn.wk});
    o = attention_heads(c, qk[0], qk[1], gather_rows(v, r.routed), r.positions, r.cu_seqlens);
  }
  // One W_O product over all rows: p_a W_O(attention) for routed tokens, p_b W_O(expand(W_V u)) for
  // the others (rule 6's y, by the linearity of W_O; the bypass is rule 7's attention in which each
  // token sees only itself, so its heads are the token's own values).
  Tensor y = n > 0 ? reduce_from_tensor_parallel(tp, linear(combine_paths(o, v, p_vec, r.routed, r.bypass, heads),
                                                            w.attn.wo))
                   : Tensor::zeros({0, ch}, x.dtype(), x.device());
  const ResidualNorm h = add_rmsnorm(in.sum, y.reshape({b, t, ch}), w.norm_post, c.norm_eps);
  Tensor out = mlp_forward(w.mlp, h.normed, tp, h.sum);
  if (stats != nullptr) {
    stats->s = mean(p_attn);
    if (control.soft_tau > 0) {
      stats->soft = mean(softmax(scale(z_biased, 1.0 / control.soft_tau)).narrow(1, 0, 1));
    }
    if (control.z_loss) {
      Tensor lse = logsumexp(z);
      stats->z_sq = mean(mul(lse, lse));
    }
    if (control.measure && n > 0) {
      stats->quantiles =
          sorted_quantiles(sort_values(f32(delta)).first, measured_quantile_levels(control.target_fraction));
    }
    stats->routed = r.count;
    stats->threshold_routed = r.threshold_count;
    stats->tokens = n;
    stats->fallback = r.fallback;
  }
  return out;
}

}  // namespace dtrn::model
