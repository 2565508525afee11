// Which part of the training state each rank saves and loads (docs/checkpoints.md, "Who writes what").
// A parameter's local tensor is the box of its global tensor that NamedParameter::tp gives (the TP rank's
// equal slice along tp.dim). An optimizer piece is a range of a parameter's flattened local elements
// (ZeRO-1 cuts those anywhere), saved as the few boxes that range covers. Data several ranks hold is
// saved once: parameters by DP rank 0; moments by DP rank 0 unless ZeRO-1 shards them over DP (then every
// DP rank saves its pieces); and what every TP rank holds whole, by TP rank 0.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "checkpoint_format.h"
#include "dtrn/model/model.h"
#include "dtrn/train/checkpoint.h"
#include "reshard.h"

namespace dtrn::train {

struct Box {
  std::vector<int64_t> offsets;
  Shape shape;
};

// The boxes covering elements [begin, begin + length) of a row-major tensor of `shape`, in order. Each box
// is contiguous in that order, so box k holds the next numel(box k) elements of the range.
std::vector<Box> flat_range_boxes(const Shape& shape, int64_t begin, int64_t length);

// The global shape of a parameter whose local tensor has shape `local`, and the local box's offsets in it.
struct GlobalPlace {
  Shape global_shape;
  std::vector<int64_t> offsets;
};
GlobalPlace tp_place(const Shape& local, const model::TensorParallelSlice& tp);

// Host f32 copies of everything `place`'s rank saves of `params` (the model's, with their TP slices) and
// of its optimizer pieces.
std::vector<TensorSlice> rank_slices(const std::vector<model::NamedParameter>& params,
                                     const OptimizerState& optimizer, const RankPlace& place);

// What a rank loads: requests for its parameters' local boxes (and, with `optimizer`, its pieces' boxes),
// `targets[i]` the tensor request i is copied into, and `known` every tensor name of the model's state
// (its parameters and their moments), so that slices this rank does not need can be told from strangers.
struct RankRequests {
  std::vector<SliceRequest> requests;
  std::vector<Tensor> targets;
  std::set<std::string> known;
};
RankRequests rank_requests(const std::vector<model::NamedParameter>& params, const OptimizerState* optimizer);

// Fills `wanted` from `saved` (reshard.h's checks, with `where` in messages; `unread` as there) and copies
// every request into its target. Saved tensors of the model's state that this rank does not load (other
// ranks' ZeRO-1 pieces; the moments, without an optimizer) are passed over; any other tensor is a
// stranger, an error.
Status load_rank_slices(const std::string& where, std::vector<TensorSlice> saved, const RankRequests& wanted,
                        const std::vector<SliceBox>& unread = {});

// Reads from the shards of checkpoint `dir` only the slices that share an element with one of `wanted`'s
// requests (verifying each slice read), and loads them as load_rank_slices does.
Status load_rank_shards(const std::string& dir, const std::vector<ShardEntry>& shards, const RankRequests& wanted);

std::string exp_avg_name(const std::string& param);
std::string exp_avg_sq_name(const std::string& param);

}  // namespace dtrn::train
