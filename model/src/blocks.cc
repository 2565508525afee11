// T and D blocks. The D block realises real sparsity: only routed tokens are gathered for Q, K, V and
// attention (packed per sequence, the varlen form), only bypassed tokens go through W_V alone; the two
// results are scattered back. Compute and memory scale with the routed count (rule 8).
#include "dtrn/model/blocks.h"

#include <algorithm>
#include <numeric>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/rng.h"

namespace dtrn::model {
namespace {

// Query head h reads KV head h / (H / G): an index over the G kv heads of length H.
Tensor head_expansion(int64_t heads, int64_t kv_heads, Device device) {
  std::vector<int64_t> map(heads);
  for (int64_t h = 0; h < heads; ++h) map[h] = h / (heads / kv_heads);
  return Tensor::from_ints(map, {heads}, DType::kI64, device);
}

// Attention over packed rows u [N, C] with positions [N] and sequence boundaries cu [S+1] -> [N, C].
Tensor packed_attention(const ModelConfig& c, const AttentionWeights& w, const Tensor& u,
                        const Tensor& positions, const Tensor& cu_seqlens) {
  const int64_t n = u.size(0), h = c.n_heads, g = c.n_kv_heads, d = c.head_dim();
  Tensor q = rope(linear(u, w.wq).reshape({n, h, d}), positions, c.rope_theta);
  Tensor k = rope(linear(u, w.wk).reshape({n, g, d}), positions, c.rope_theta);
  Tensor v = linear(u, w.wv).reshape({n, g, d});
  Tensor o = attention(q, k, v, cu_seqlens);
  return linear(o.reshape({n, h * d}), w.wo);
}

// The bypass (rule 7): c = W_O(expand(W_V u)), attention in which each token sees only itself.
Tensor bypass(const ModelConfig& c, const AttentionWeights& w, const Tensor& u) {
  const int64_t n = u.size(0), h = c.n_heads, g = c.n_kv_heads, d = c.head_dim();
  Tensor v = linear(u, w.wv).reshape({n, g, d});
  if (g != h) v = index_select(v, 1, head_expansion(h, g, u.device()));
  return linear(v.reshape({n, h * d}), w.wo);
}

}  // namespace

Tensor mlp_forward(const MlpWeights& w, const Tensor& u) {
  return linear(swiglu(linear(u, w.gate), linear(u, w.up)), w.down);
}

Tensor sequence_positions(int64_t batch, int64_t seq, Device device) {
  std::vector<int64_t> pos(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i) pos[i] = i % seq;
  return Tensor::from_ints(pos, {batch * seq}, DType::kI64, device);
}

Tensor dense_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2);
  Tensor u = rmsnorm(x, w.norm_in, c.norm_eps).reshape({b * t, ch});
  std::vector<int64_t> cu(b + 1);
  for (int64_t i = 0; i <= b; ++i) cu[i] = i * t;
  Tensor cu_seqlens = Tensor::from_ints(cu, {b + 1}, DType::kI32, x.device());
  Tensor a = packed_attention(c, w.attn, u, sequence_positions(b, t, x.device()), cu_seqlens);
  Tensor h = add(x, a.reshape({b, t, ch}));
  return add(h, mlp_forward(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps)));
}

Tensor router_p_attn(const RouterWeights& w, const Tensor& x) {
  const int64_t n = x.size(0) * x.size(1);
  Tensor x32 = x.reshape({n, x.size(2)});
  Tensor z = linear(silu(linear(x32, w.w1, w.b1)), w.w2, w.b2);  // [N, 2]
  // Probabilities in at least f32 (rule 2); f64 models (the gradient checks) keep f64.
  Tensor p = softmax(z.dtype() == DType::kF64 ? z : z.to(DType::kF32));
  return p.narrow(1, 0, 1).reshape({n});
}

Tensor routed_block_forward(const ModelConfig& c, const BlockWeights& w, const Tensor& x,
                            const FallbackDraw& fallback, RoutingStats* stats) {
  const int64_t b = x.size(0), t = x.size(1), ch = x.size(2), n = b * t;
  Tensor p_attn = router_p_attn(w.router, x);  // [N] f32

  // Rule 3: hard routing on p_a > 0.5; the mask carries no gradient. Read on the host.
  std::vector<double> p_host = p_attn.to_vector();
  std::vector<char> routed(n);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += routed[i] = p_host[i] > 0.5;
  bool fired = false;
  if (count == 0 && fallback.enabled && n > 0) {
    // Rule 4: a uniformly random fallback.fraction of the B*T tokens, without replacement
    // (a partial Fisher-Yates shuffle driven by the counter-based RNG).
    const int64_t want = std::max<int64_t>(1, static_cast<int64_t>(fallback.fraction * n + 0.5));
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    RngStream rng(fallback.seed, fallback.stream, fallback.offset);
    for (int64_t i = 0; i < want; ++i) {
      std::swap(order[i], order[i + static_cast<int64_t>(rng.next_below(n - i))]);
      routed[order[i]] = 1;
    }
    count = want;
    fired = true;
  }

  // Routed tokens in (row, position) order, with per-row boundaries; bypassed tokens likewise.
  std::vector<int64_t> routed_idx, routed_pos, bypass_idx;
  std::vector<int64_t> cu(b + 1, 0);
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t j = 0; j < t; ++j) {
      const int64_t i = r * t + j;
      if (routed[i]) {
        routed_idx.push_back(i);
        routed_pos.push_back(j);
      } else {
        bypass_idx.push_back(i);
      }
    }
    cu[r + 1] = static_cast<int64_t>(routed_idx.size());
  }
  const Device dev = x.device();
  const int64_t nr = static_cast<int64_t>(routed_idx.size()), nb = n - nr;

  Tensor u = rmsnorm(x, w.norm_in, c.norm_eps).reshape({n, ch});  // rule 5: computed once
  Tensor p_col = p_attn.reshape({n, 1});
  Tensor y = Tensor::zeros({n, ch}, x.dtype(), dev);
  if (nr > 0) {
    Tensor idx = Tensor::from_ints(routed_idx, {nr}, DType::kI64, dev);
    Tensor a = packed_attention(c, w.attn, index_select(u, 0, idx),
                                Tensor::from_ints(routed_pos, {nr}, DType::kI64, dev),
                                Tensor::from_ints(cu, {b + 1}, DType::kI32, dev));
    Tensor pa = index_select(p_col, 0, idx).to(x.dtype());
    y = index_add(y, 0, idx, mul(a, pa));
  }
  if (nb > 0) {
    Tensor idx = Tensor::from_ints(bypass_idx, {nb}, DType::kI64, dev);
    Tensor cb = bypass(c, w.attn, index_select(u, 0, idx));
    Tensor pb = add_scalar(scale(index_select(p_col, 0, idx), -1.0), 1.0).to(x.dtype());
    y = index_add(y, 0, idx, mul(cb, pb));
  }
  Tensor h = add(x, y.reshape({b, t, ch}));
  Tensor out = add(h, mlp_forward(w.mlp, rmsnorm(h, w.norm_post, c.norm_eps)));
  if (stats != nullptr) {
    stats->s = mean(p_attn);
    stats->routed = count;
    stats->tokens = n;
    stats->fallback = fired;
  }
  return out;
}

}  // namespace dtrn::model
