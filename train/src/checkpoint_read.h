// Reading a checkpoint back whole, whatever layout saved it (for `dtrn export` and `dtrn ckpt inspect`).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dtrn/runtime/status.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::train {

struct CheckpointWeights {
  std::vector<std::pair<std::string, Tensor>> tensors;  // the model's, whole, in the first shard's order
  std::map<std::string, std::string> metadata;          // the manifest's model metadata + "format": "pt"
};

// Verifies every shard it reads; the optimizer moments are left out.
StatusOr<CheckpointWeights> read_checkpoint_weights(const std::string& checkpoint_dir);

}  // namespace dtrn::train
