// Evaluation on a token stream, with one definition shared by `dtrn eval` and the trainer's periodic
// validation, so anyone can reproduce the number:
//   window k feeds tokens [k T, k T + T) and predicts [k T + 1, k T + T], T = seq_len, until the tokens
//   run out (the last window may be shorter); every token but the first is predicted exactly once.
// loss is the mean cross-entropy (nats, CE only: routing terms are training-only), ppl = exp(loss),
// bits_per_byte = loss / ln 2 / bytes_per_token. Inference semantics: no starvation fallback.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "dtrn/model/model.h"

namespace dtrn::train {

struct LayerAverage {
  int64_t layer = 0;
  double f = 0;  // routed fraction over all evaluated tokens
  double s = 0;  // mean p_attn over all evaluated tokens
  bool fallback = false;  // the starvation fallback fired in some forward (never at inference: rule 4)
};

struct EvalResult {
  double loss = 0;
  double ppl = 0;
  double bits_per_byte = 0;
  int64_t tokens = 0;  // tokens predicted
  std::vector<LayerAverage> layers;
};

// Called after each forward with the batches done and the batches this evaluation will run in all.
using EvalProgress = std::function<void(int64_t done, int64_t total)>;

// Scores `tokens` in consecutive windows, `batch` windows per forward; max_batches > 0 stops early.
EvalResult evaluate_tokens(model::DtrnModel& model, const std::vector<int32_t>& tokens, int64_t batch,
                           int64_t max_batches, double bytes_per_token, const EvalProgress& progress = {});

}  // namespace dtrn::train
