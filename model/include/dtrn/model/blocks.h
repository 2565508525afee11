// The two layer kinds of a DTRNet model (dtrnet-spec.md beside the project; rule numbers refer to it).
//
//   T: h = x + Attn(N_in(x));  out = h + MLP(N_post(h))            (a dense pre-norm Llama block)
//   D: the router on the raw residual x picks, per token, attention (p_a > 0.5) or the bypass
//      W_O(expand(W_V u)); y = p_a * a for routed tokens, p_b * c for the others; h = x + y;
//      out = h + MLP(N_post(h)).
// Shapes: x [B, T, C]; B batch, T tokens per sequence, C = d_model, H heads, G kv heads, D head dim.
// Weights follow the Hugging Face Llama layout: Linear weights are [out, in].
//
// Tensor parallelism (tp non-null, size P): the weights are this rank's slices (model.h's Note
// [Tensor-parallel DTRNet]): H/P query heads and G/P KV heads of Q, K, V (rows) and of O (columns), F/P
// hidden units of gate and up (rows) and of down (columns); norms and the router whole. x and the block's
// output are replicated; each block adds one all-reduce after attention (or the D block's two paths
// together) and one after the MLP. tp null: the whole block in this process.
#pragma once

#include <cstdint>
#include <vector>

#include "dtrn/model/config.h"
#include "dtrn/model/tensor_parallel_ops.h"
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

// What a D block reports each forward (spec: per-layer statistics, and the routing controls' inputs).
struct RoutingStats {
  Tensor s;               // scalar, mean p_a over all B*T tokens (differentiable)
  Tensor soft;            // scalar, mean sigmoid((Delta + b) / tau) (differentiable), when asked for
  Tensor z_sq;            // scalar, mean logsumexp(z)^2 over the tokens (differentiable), when asked for
  Tensor quantiles;       // f32 [4], detached: Delta at kMeasuredQuantiles, when measured
  int64_t routed = 0;     // tokens sent to attention (fallback tokens included)
  int64_t threshold_routed = 0;  // tokens the threshold alone routed, before any fallback
  int64_t tokens = 0;     // B*T
  bool fallback = false;  // a fallback (rule 4, or the band fallback) fired
  double f() const { return tokens ? static_cast<double>(routed) / static_cast<double>(tokens) : 0.0; }
};

using dtrn::BandFallback;  // routing.h: the two-sided fallback
using dtrn::FallbackDraw;  // routing.h: where the starvation fallback draws from

// The quantiles of Delta = z_attn - z_bypass a measured forward records: p10, p50 and p90 of the routing
// telemetry (p_attn = sigmoid(Delta) is monotone in Delta, so its quantiles are the sigmoids of these),
// then 1 - rho, the threshold that routes the target fraction (the bias update's input).
inline constexpr int kMeasuredQuantiles = 4;
std::vector<double> measured_quantile_levels(double target_fraction);

// How a D block routes within and beyond the spec's rule 3 (the routing controls, docs/routing-loss.md).
// The default is the spec: route iff p_a > 0.5, paths scaled by p_a, nothing measured.
struct RouteControl {
  bool use_bias = false;          // route iff Delta + bias > 0 (the threshold bias b_l)
  double bias = 0;
  bool bias_scales_path = true;   // paths scaled by sigmoid(Delta + bias) rather than p_a
  BandFallback band;              // training only
  bool measure = false;           // record Delta's quantiles (training)
  double target_fraction = 0.1;   // rho, for the measured quantile 1 - rho
  double soft_tau = 0;            // > 0: record the soft above-threshold fraction
  bool z_loss = false;            // record mean logsumexp(z)^2
};
// Constants of one batch shape that every block of a forward reads: made once per shape and kept by the
// model, so that no block uploads index tensors (a host-to-device copy each) on every call.
struct BlockContext {
  Tensor positions;   // i32 [B*T]: 0..T-1 per row
  Tensor cu_seqlens;  // i32 [B+1]: row boundaries (the T block's packed attention)
};
BlockContext make_block_context(const ModelConfig& config, int64_t batch, int64_t seq, Device device);

// u replicated -> the MLP's output, replicated (summed over the TP group when tp is set), plus
// `residual` (the output's shape) when given: added inside the down projection without TP.
Tensor mlp_forward(const MlpWeights& w, const Tensor& u, TensorParallelOps* tp = nullptr,
                   const Tensor& residual = Tensor());

// Positions 0..T-1 for each of B rows, flattened: i32 [B*T].
Tensor sequence_positions(int64_t batch, int64_t seq, Device device);

// ctx: the shape's constants (made on the fly when null).
Tensor dense_block_forward(const ModelConfig& config, const BlockWeights& w, const Tensor& x,
                           const BlockContext* ctx = nullptr, TensorParallelOps* tp = nullptr);

// The router's logits z for every token: x [B, T, C] -> [B*T, 2] (attention, bypass), f32 (f64 for f64
// models), and its attention probability p_a = softmax(z)[:, 0] -> [B*T] (rule 2).
Tensor router_logits(const RouterWeights& w, const Tensor& x);
Tensor router_p_attn(const RouterWeights& w, const Tensor& x);

Tensor routed_block_forward(const ModelConfig& config, const BlockWeights& w, const Tensor& x,
                            const FallbackDraw& fallback, RoutingStats* stats, const RouteControl& control = {},
                            TensorParallelOps* tp = nullptr);

}  // namespace dtrn::model
