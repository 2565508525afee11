// The whole model and optimizer state of a tensor-parallel rank group, for checkpoints and imports
// that read and write full tensors (checkpoint.h): TP ranks hold slices of the large weights and of
// their AdamW moments (NamedParameter::tp, model.h's Note [Tensor-parallel DTRNet]); a save gathers
// them to one rank's whole model, a load or an import fills a whole model and each rank takes its
// slices. The whole model lives only while a checkpoint is read or written.
//
// Ownership: WholeState owns its model and optimizer. Not thread-safe.
#pragma once

#include <memory>

#include "dtrn/model/model.h"
#include "dtrn/parallel/communicator.h"
#include "dtrn/runtime/optim.h"

namespace dtrn::train {

struct WholeState {
  std::unique_ptr<model::DtrnModel>
      model;                         // without TP, master-precision weights, zero until filled
  std::unique_ptr<AdamW> optimizer;  // over model's parameters
};

// AdamW's entries for a model's parameters (the compute copies where they differ; slices marked
// sharded).
std::vector<ParamGroupEntry> param_group_entries(const model::DtrnModel& model);

// A whole model of `mine`'s config, routing and device (no TP; f32, or f64 for an f64 model) and an
// AdamW over it with `options`.
WholeState make_whole_state(const model::DtrnModel& mine, const AdamWOptions& options);

// Collective over tp (every TP rank calls it): `whole`, non-null on one rank, receives every rank's
// slices of the weights and moments, the step count and the routing state; the others pass null.
void gather_tensor_parallel(const model::DtrnModel& mine, AdamW& mine_optimizer,
                            parallel::Communicator& tp, WholeState* whole);

// This rank's slices of `whole`'s weights (and, where mine_optimizer is non-null, of its moments
// and its step count), and its routing state; the compute copies are refreshed.
void take_tensor_parallel_slices(WholeState& whole, model::DtrnModel* mine, AdamW* mine_optimizer);

}  // namespace dtrn::train
