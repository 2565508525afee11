// The two layer kinds of a DTRNet model (dtrnet-spec.md beside the project; rule numbers refer to it).
//
//   T: h = x + Attn(N_in(x));  out = h + MLP(N_post(h))            (a dense pre-norm Llama block)
//   D: the router on the raw residual x picks, per token, attention (p_a > 0.5) or the bypass
//      W_O(expand(W_V u)); y = p_a * a for routed tokens, p_b * c for the others; h = x + y;
//      out = h + MLP(N_post(h)).
// Shapes: x [B, T, C]; B batch, T tokens per sequence, C = d_model, H heads, G kv heads, D head dim.
// Weights follow the Hugging Face Llama layout: Linear weights are [out, in].
#pragma once

#include <cstdint>
#include <vector>

#include "dtrn/model/config.h"
#include "dtrn/runtime/routing.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::model {

struct AttentionWeights {
  Tensor wq;  // [H*D, C]
  Tensor wk;  // [G*D, C]
  Tensor wv;  // [G*D, C]
  Tensor wo;  // [C, H*D]
};

struct MlpWeights {
  Tensor gate;  // [F, C]
  Tensor up;    // [F, C]
  Tensor down;  // [C, F]
};

struct RouterWeights {
  Tensor w1, b1;  // [C/2, C], [C/2]
  Tensor w2, b2;  // [2, C/2], [2]
};

struct BlockWeights {
  Tensor norm_in;    // [C]
  Tensor norm_post;  // [C]
  AttentionWeights attn;
  MlpWeights mlp;
  RouterWeights router;  // D blocks only
};

// What a D block reports each forward (spec: per-layer statistics).
struct RoutingStats {
  Tensor s;               // scalar, mean p_a over all B*T tokens (differentiable)
  int64_t routed = 0;     // tokens sent to attention (fallback tokens included)
  int64_t tokens = 0;     // B*T
  bool fallback = false;  // rule 4 fired
  double f() const { return tokens ? static_cast<double>(routed) / static_cast<double>(tokens) : 0.0; }
};

using dtrn::FallbackDraw;  // routing.h: where the starvation fallback draws from

// Constants of one batch shape that every block of a forward reads: made once per shape and kept by the
// model, so that no block uploads index tensors (a host-to-device copy each) on every call.
struct BlockContext {
  Tensor positions;   // i32 [B*T]: 0..T-1 per row
  Tensor cu_seqlens;  // i32 [B+1]: row boundaries (the T block's packed attention)
  Tensor head_map;    // i32 [H]: query head h reads KV head h / (H / G); undefined when H == G
};
BlockContext make_block_context(const ModelConfig& config, int64_t batch, int64_t seq, Device device);

Tensor mlp_forward(const MlpWeights& w, const Tensor& u);

// Positions 0..T-1 for each of B rows, flattened: i32 [B*T].
Tensor sequence_positions(int64_t batch, int64_t seq, Device device);

// ctx: the shape's constants (made on the fly when null).
Tensor dense_block_forward(const ModelConfig& config, const BlockWeights& w, const Tensor& x,
                           const BlockContext* ctx = nullptr);

// The router's attention probability p_a for every token: x [B, T, C] -> [B*T] (f32 softmax, rule 2).
Tensor router_p_attn(const RouterWeights& w, const Tensor& x);

Tensor routed_block_forward(const ModelConfig& config, const BlockWeights& w, const Tensor& x,
                            const FallbackDraw& fallback, RoutingStats* stats,
                            const BlockContext* ctx = nullptr);

}  // namespace dtrn::model
