// Token routing for DTRNet's D blocks: from the router's attention probabilities to the index lists that
// gather routed tokens into packed attention and bypassed tokens into the linear path.
//
// Everything is computed where p_attn lives (on the GPU for CUDA tensors): the hard mask, the per-row
// routed counts and their prefix (the cu_seqlens of the routed tokens), the gather lists, and the
// starvation fallback. The one host synchronisation is the read of the routed count R, which sizes the
// packed products (a second one only when the fallback fires). Not differentiable: the mask carries no
// gradient (dtrnet-spec.md, rule 3).
#pragma once

#include <cstdint>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

// Where the starvation fallback draws from (rule 4): a pure function of these, so runs are reproducible.
struct FallbackDraw {
  bool enabled = false;  // training only
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t offset = 0;    // the first RNG word of this draw
  double fraction = 0.15;  // of the B*T tokens
};

struct TokenRouting {
  Tensor routed;      // i32 [R]: flat token indices (row * T + position) routed to attention, ascending
  Tensor positions;   // i32 [R]: each routed token's position within its row (for RoPE)
  Tensor cu_seqlens;  // i32 [B + 1]: routed tokens before each row (the packed attention's boundaries)
  Tensor bypass;      // i32 [N - R]: the other tokens, ascending
  int64_t count = 0;  // R
  bool fallback = false;
};

// p_attn: f32 [B*T] for `rows` = B rows of `cols` = T tokens. A token is routed iff p_attn > 0.5. When
// none is and fallback.enabled, round(fraction * B*T) tokens (at least one) are routed instead, chosen by
// a partial Fisher-Yates shuffle driven by the counter-based RNG: the same tokens on every backend.
TokenRouting route_tokens(const Tensor& p_attn, int64_t rows, int64_t cols, const FallbackDraw& fallback);

}  // namespace dtrn
