// Token routing for DTRNet's D blocks: from the router's scores (p_attn, or the biased logit difference)
// to the index lists that gather routed tokens into packed attention and bypassed tokens into the linear
// path; and the order statistics of scores that the routing controls and telemetry read.
//
// Everything is computed where p_attn lives (on the GPU for CUDA tensors): the hard mask, the per-row
// routed counts and their prefix (the cu_seqlens of the routed tokens), the gather lists, and the
// starvation fallback. The one host synchronisation is the read of the routed count R, which sizes the
// packed products (a second one only when a fallback fires). Not differentiable: the mask carries no
// gradient (dtrnet-spec.md, rule 3).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

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

// The two-sided fallback (docs/routing-loss.md; it replaces rule 4 where enabled, training only): when
// the routed fraction of a micro-batch leaves [low, high], the round(fraction * B*T) tokens (at least
// one) with the highest scores are routed instead, ties broken towards the later token.
struct BandFallback {
  bool enabled = false;
  double low = 0.02, high = 0.3;
  double fraction = 0.1;
};

struct TokenRouting {
  Tensor routed;      // i32 [R]: flat token indices (row * T + position) routed to attention, ascending
  Tensor positions;   // i32 [R]: each routed token's position within its row (for RoPE)
  Tensor cu_seqlens;  // i32 [B + 1]: routed tokens before each row (the packed attention's boundaries)
  Tensor bypass;      // i32 [N - R]: the other tokens, ascending
  int64_t count = 0;  // R
  int64_t threshold_count = 0;  // what the threshold alone routed (R before any fallback)
  bool fallback = false;        // a fallback (random or band) replaced the threshold's choice
};

// score: f32 [B*T] for `rows` = B rows of `cols` = T tokens. A token is routed iff score > threshold (the
// spec: p_attn > 0.5; with the threshold bias: Delta + b > 0). When band.enabled and the routed count
// leaves the band, the band fallback routes instead; otherwise, when none is routed and
// fallback.enabled, round(fraction * B*T) tokens (at least one) are routed, chosen by a partial
// Fisher-Yates shuffle driven by the counter-based RNG: the same tokens on every backend.
TokenRouting route_tokens(const Tensor& score, double threshold, int64_t rows, int64_t cols,
                          const FallbackDraw& fallback, const BandFallback& band = {});

// values f32 [N] sorted ascending (stable; see Backend::sort_values) -> (sorted f32 [N], order i32 [N])
// with sorted[i] = values[order[i]], where the values live.
std::pair<Tensor, Tensor> sort_values(const Tensor& values);

// The two order statistics (0-based ranks) around the q-quantile of n >= 1 sorted values: a threshold
// with about a fraction q below it is their midpoint, so that no value sits exactly on it (where
// rounding differences between devices could flip a decision).
std::pair<int64_t, int64_t> quantile_ranks(int64_t n, double q);
// Those midpoints for each of `qs`, from `sorted` (f32 [N], N >= 1): f32 [qs.size()] where `sorted`
// lives, not read back (the trainer reads them with a step's other sums).
Tensor sorted_quantiles(const Tensor& sorted, const std::vector<double>& qs);

}  // namespace dtrn
