// The smallest DTRNet the train tests build directly (no job config): d 8, two heads sharing one KV
// head, a 30-token vocabulary; `layout` is a model.layout value (letters, "dense" or "bilayer").
#pragma once

#include <cstdint>
#include <string>

#include "dtrn/model/config.h"

namespace dtrn::train {

inline model::ModelConfig tiny_model(int64_t n_layers, const std::string& layout, int64_t seq_len = 8) {
  model::ModelConfig c;
  c.d_model = 8;
  c.n_layers = n_layers;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ff = 12;
  c.vocab_size = 30;
  c.seq_len = seq_len;
  c.layout = layout;
  return c;
}

}  // namespace dtrn::train
