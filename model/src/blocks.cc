// T and D blocks. The D block realises real sparsity: only routed tokens are gathered for Q, K, V and
// attention (packed per sequence, the varlen form), only bypassed tokens go through W_V alone; the two
// results are placed back with one scatter. Compute and memory scale with the routed count (rule 8).
// Routing runs where the activations live (routing.h): one read of the routed count per D block is the
// only host synchronisation.
#include "dtrn/model/blocks.h"

#include <vector>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {
namespace {

// Attention over packed rows u [N, C] with positions [N] and sequence boundaries cu [S+1] -> [N, C].
// The head counts are the weights' (this TP rank's heads; all of them without TP); the output is then
// this rank's part of the sum over heads that W_O computes.
Tensor packed_attention(const ModelConfig& c, const AttentionWeights& w, const Tensor& u,
                        const Tensor& positions, const Tensor& cu_seqlens) {
  const int64_t d = c.head_dim(), n = u.size(0), h = w.wq.size(0) / d, g = w.wk.size(0) / d;
  Tensor q = rope(linear(u, w.wq).reshape({n, h, d}), positions, c.rope_theta);
  Tensor k = rope(linear(u, w.wk).reshape({n, g, d}), positions, c.rope_theta);
  Tensor v = linear(u, w.wv).reshape({n, g, d});
  Tensor o = attention(q, k, v, cu_seqlens);
  return linear(o.reshape({n, h * d}), w.wo);
}

// The bypass (rule 7): c = W_O(expand(W_V u)), attention in which each token sees only itself. A TP
// rank's H/P heads read its G/P KV heads by the first H/P entries of the global head map (H/G is the same).
Tensor bypass(const ModelConfig& c, const AttentionWeights& w, const Tensor& u, const Tensor& head_map) {
  const int64_t d = c.head_dim(), n = u.size(0), h = w.wo.size(1) / d, g = w.wv.size(0) / d;
  Tensor v = linear(u, w.wv).reshape({n, g, d});
  if (g != h) v = index_select(v, 1, head_map.narrow(0, 0, h));
  return linear(v.reshape({n, h * d}), w.wo);
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
  if (c.n_kv_heads != c.n_heads) {
    std::vector<int64_t> map(c.n_heads);
    for (int64_t h = 0; h < c.n_heads; ++h) map[h] = h / (c.n_heads / c.n_kv_heads);
    ctx.head_map = Tensor::from_ints(map, {c.n_heads}, DType::kI32, device);
  }
  return ctx;
}

Tensor mlp_forward(const MlpWeights& w, const Tensor& u, TensorParallelOps* tp) {
  const Tensor ut = copy_to_tensor_parallel(tp, u);
  return reduce_from_tensor_parallel(tp, linear(swiglu(linear(ut, w.gate), linear(ut, w.up)), w.down));
}

Tensor dense_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                           const BlockContext* ctx, TensorParallelOps* tp) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2);
  const BlockContext local = ctx ? BlockContext{} : make_block_context(c, b, t, x.device());
  const BlockContext& k = ctx ? *ctx : local;
  Tensor u = copy_to_tensor_parallel(tp, rmsnorm(x, w.norm_in, c.norm_eps).reshape({b * t, ch}));
  Tensor a = reduce_from_tensor_parallel(tp, packed_attention(c, w.attn, u, k.positions, k.cu_seqlens));
  Tensor h = add(x, a.reshape({b, t, ch}));
  return add(h, mlp_forward(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps), tp));
}

std::vector<double> measured_quantile_levels(double target_fraction) {
  return {0.1, 0.5, 0.9, 1.0 - target_fraction};
}

Tensor router_logits(const RouterWeights& w, const Tensor& x) {
  const int64_t n = x.size(0) * x.size(1);
  Tensor x2 = x.reshape({n, x.size(2)});
  Tensor z = linear(silu(linear(x2, w.w1, w.b1)), w.w2, w.b2);  // [N, 2]
  // Probabilities in at least f32 (rule 2); f64 models (the gradient checks) keep f64.
  return z.dtype() == DType::kF64 ? z : z.to(DType::kF32);
}

Tensor router_p_attn(const RouterWeights& w, const Tensor& x) {
  return softmax(router_logits(w, x)).narrow(1, 0, 1).reshape({x.size(0) * x.size(1)});
}

Tensor routed_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                            const FallbackDraw& fallback, RoutingStats* stats, const BlockContext* ctx,
                            const RouteControl& control, TensorParallelOps* tp) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2), n = b * t;
  const BlockContext local = ctx ? BlockContext{} : make_block_context(c, b, t, x.device());
  const BlockContext& k = ctx ? *ctx : local;
  Tensor z = router_logits(w.router, x);  // [N, 2], f32 (f64 in gradient checks)
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

  // rule 5: computed once (and, under TP, entering this rank's heads once)
  Tensor u = copy_to_tensor_parallel(tp, rmsnorm(x, w.norm_in, c.norm_eps).reshape({n, ch}));
  Tensor p_col = p_path.reshape({n, 1});
  // Each path's output and its scale (p_a routed, p_b bypassed) in the token's row. The outputs are
  // summed over the TP group before the scale is applied, so that the router's gradient, read from the
  // product, is the whole one on every rank.
  std::vector<Tensor> outputs, scales, rows;
  if (r.count > 0) {
    outputs.push_back(packed_attention(c, w.attn, index_select(u, 0, r.routed), r.positions, r.cu_seqlens));
    scales.push_back(index_select(p_col, 0, r.routed).to(x.dtype()));
    rows.push_back(r.routed);
  }
  if (r.count < n) {
    outputs.push_back(bypass(c, w.attn, index_select(u, 0, r.bypass), k.head_map));
    scales.push_back(add_scalar(scale(index_select(p_col, 0, r.bypass), -1.0), 1.0).to(x.dtype()));
    rows.push_back(r.bypass);
  }
  Tensor y = n > 0 ? mul(reduce_from_tensor_parallel(tp, scatter_rows(outputs, rows, n)), scatter_rows(scales, rows, n))
                   : Tensor::zeros({0, ch}, x.dtype(), x.device());
  Tensor h = add(x, y.reshape({b, t, ch}));
  Tensor out = add(h, mlp_forward(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps), tp));
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
