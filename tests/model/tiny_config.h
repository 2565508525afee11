// The model tests' small block shape: d_model 8 in 2 heads of 4, d_ff 12, a vocabulary of 50 and 16
// positions, with `layers` layers and `kv_heads` KV heads (one where the tests do not vary it).
#pragma once

#include <cstdint>

#include "dtrn/model/config.h"

namespace dtrn::model {

inline ModelConfig tiny_block_config(int64_t layers, int64_t kv_heads = 1) {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = layers;
  c.n_heads = 2;
  c.n_kv_heads = kv_heads;
  c.d_ff = 12;
  c.vocab_size = 50;
  c.seq_len = 16;
  return c;
}

}  // namespace dtrn::model
