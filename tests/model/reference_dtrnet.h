// An independent, straightforward implementation of dtrnet-spec.md for the model tests.
//
// Where dtrn gathers routed tokens and runs packed variable-length attention, this reference computes
// Q, K, V and dense [T, T] attention for every token, and applies the routing with explicit masks:
// key j is visible to query i iff j <= i and both are routed; y = m p_a a + (1 - m) (1 - p_a) c with m a
// constant 0/1 mask. KV-head expansion is a concat of repeated slices instead of an index gather. The two
// must agree to rounding in f64.
#pragma once

#include <cmath>
#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model::reference {

// [B, T, G, D] -> [B, T, H, D], head h reading kv head h / (H / G).
inline Tensor expand_heads(const Tensor& kv, int64_t heads) {
  const int64_t g = kv.size(2);
  if (g == heads) return kv;
  std::vector<Tensor> parts;
  for (int64_t h = 0; h < heads; ++h) parts.push_back(kv.narrow(2, h / (heads / g), 1));
  return concat(parts, 2);
}

// Rotate-half RoPE of [B, T, n, D] at positions 0..T-1.
inline Tensor rope_bt(const Tensor& x, double theta) {
  const int64_t b = x.size(0), t = x.size(1), n = x.size(2), d = x.size(3);
  std::vector<int64_t> pos(b * t);
  for (int64_t i = 0; i < b * t; ++i) pos[i] = i % t;
  return rope(x.reshape({b * t, n, d}), Tensor::from_ints(pos, {b * t}), theta).reshape({b, t, n, d});
}

// Attention of every token of u [B, T, C] with visibility allowed[b][i][j] -> W_O(attn) [B, T, C].
// Rows with no visible key produce an arbitrary finite value (callers mask them out).
inline Tensor masked_attention(const ModelConfig& c, const AttentionWeights& w, const Tensor& u,
                               const std::vector<char>& allowed) {
  const int64_t b = u.size(0), t = u.size(1), h = c.n_heads, g = c.n_kv_heads, d = c.head_dim();
  Tensor q = rope_bt(linear(u, w.wq).reshape({b, t, h, d}), c.rope_theta).transpose(1, 2);
  Tensor k = expand_heads(rope_bt(linear(u, w.wk).reshape({b, t, g, d}), c.rope_theta), h).transpose(1, 2);
  Tensor v = expand_heads(linear(u, w.wv).reshape({b, t, g, d}), h).transpose(1, 2);
  Tensor scores = scale(matmul(q, k, false, true), 1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<double> bias(b * t * t);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t i = 0; i < t; ++i) {
      bool any = false;
      for (int64_t j = 0; j < t; ++j) any |= allowed[(r * t + i) * t + j] != 0;
      for (int64_t j = 0; j < t; ++j)
        bias[(r * t + i) * t + j] = (!any || allowed[(r * t + i) * t + j]) ? 0.0 : -1e30;
    }
  Tensor p = softmax(add(scores, Tensor::from_vector(bias, {b, 1, t, t}, u.dtype())));
  Tensor o = matmul(p, v).transpose(1, 2).reshape({b, t, h * d});
  return linear(o, w.wo);
}

inline std::vector<char> causal_visibility(int64_t b, int64_t t, const std::vector<char>& routed) {
  std::vector<char> allowed(b * t * t, 0);
  for (int64_t r = 0; r < b; ++r)
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j <= i; ++j)
        allowed[(r * t + i) * t + j] = routed[r * t + i] && routed[r * t + j];
  return allowed;
}

inline Tensor mlp(const MlpWeights& w, const Tensor& u) {
  return linear(mul(silu(linear(u, w.gate)), linear(u, w.up)), w.down);
}

// The bypass for every token: W_O(expand(W_V u)).
inline Tensor bypass(const ModelConfig& c, const AttentionWeights& w, const Tensor& u) {
  const int64_t b = u.size(0), t = u.size(1);
  Tensor v = expand_heads(linear(u, w.wv).reshape({b, t, c.n_kv_heads, c.head_dim()}), c.n_heads);
  return linear(v.reshape({b, t, c.d_model}), w.wo);
}

inline Tensor p_attn(const RouterWeights& w, const Tensor& x) {
  Tensor z = linear(silu(linear(x, w.w1, w.b1)), w.w2, w.b2);
  return softmax(z).narrow(2, 0, 1);  // [B, T, 1]
}

inline Tensor dense_block(const ModelConfig& c, const BlockWeights& w, const Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1);
  Tensor u = rmsnorm(x, w.norm_in, c.norm_eps);
  Tensor h = add(x, masked_attention(c, w.attn, u, causal_visibility(b, t, std::vector<char>(b * t, 1))));
  return add(h, mlp(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps)));
}

// The D block with an explicit routing mask (from p_a > 0.5, or a fallback set chosen by the caller).
inline Tensor routed_block(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                           const std::vector<char>& routed) {
  const int64_t b = x.size(0), t = x.size(1);
  Tensor pa = p_attn(w.router, x);
  std::vector<double> m(routed.begin(), routed.end());
  Tensor mask = Tensor::from_vector(m, {b, t, 1}, x.dtype());
  Tensor inv = add_scalar(scale(mask, -1.0), 1.0);
  Tensor u = rmsnorm(x, w.norm_in, c.norm_eps);
  Tensor a = masked_attention(c, w.attn, u, causal_visibility(b, t, routed));
  Tensor cb = bypass(c, w.attn, u);
  Tensor pb = add_scalar(scale(pa, -1.0), 1.0);
  Tensor y = add(mul(mul(mask, pa), a), mul(mul(inv, pb), cb));
  Tensor h = add(x, y);
  return add(h, mlp(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps)));
}

// The routing decision of rule 3 from p_a's values.
inline std::vector<char> route_by_threshold(const RouterWeights& w, const Tensor& x) {
  std::vector<double> p = p_attn(w, x).to_vector();
  std::vector<char> r(p.size());
  for (size_t i = 0; i < p.size(); ++i) r[i] = p[i] > 0.5;
  return r;
}

}  // namespace dtrn::model::reference
