// What the trainer and `dtrn bench` need of a tensor-parallel model beyond the model itself: AdamW's
// entries (slices marked sharded, for the clipping norm) and `--init-from` of a safetensors file, which
// holds whole tensors: a whole model of the same config reads the file and each TP rank keeps its slices
// (NamedParameter::tp, model.h's Note [Tensor-parallel DTRNet]). Checkpoints need none of this: every
// rank saves and loads its own slices (checkpoint.h).
#pragma once

#include <string>
#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/runtime/status.h"

namespace dtrn::train {

// AdamW's entries for a model's parameters (the compute copies where they differ; TP slices marked
// sharded).
std::vector<ParamGroupEntry> param_group_entries(const model::DtrnModel& model);

// init_from_safetensors (checkpoint.h) into a tensor-parallel model: a whole model of its config (no
// TP, master precision, initialised from `seed` like the single process, so what the file leaves out
// stays as that process would have it) reads the file, and `mine` takes its slices and routing state.
// Every TP rank reads the whole file and briefly holds the whole model.
Status init_from_safetensors_sliced(const std::string& file, uint64_t seed, model::DtrnModel* mine);

}  // namespace dtrn::train
