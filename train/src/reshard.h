// Resharding on load: any box of a tensor is assembled from the slices saved by whatever layout wrote
// the checkpoint (checkpoint_format.h), so a checkpoint saved at dp x tp loads at any other dp, tp or
// ZeRO split. The saved slices of one tensor must not overlap (each element saved once: replicated
// tensors are written by one rank); a request must be covered completely.
#pragma once

#include <string>
#include <vector>

#include "checkpoint_format.h"

namespace dtrn::train {

// A box of a global tensor to fill: `out` is a host f32 contiguous tensor of the box's shape.
struct SliceRequest {
  std::string name;
  Shape global_shape;
  std::vector<int64_t> offsets;
  Tensor out;
};

// Fills every request from `saved`. Checks everything before copying anything: a tensor the checkpoint
// lacks or that the requests never name (a different model), a global shape that differs, or a box not
// covered by the saved slices is one InvalidArgument / DataLoss line naming `where` and the tensor.
// `unread` are saved slices that were not read (a reader of its own boxes only): they count towards the
// check that every element of a tensor is saved exactly once, and are never needed for a request.
Status fill_slices(const std::string& where, const std::vector<TensorSlice>& saved,
                   const std::vector<SliceRequest>& requests, const std::vector<SliceBox>& unread = {});

// Whether the box of `shape` at `offsets` shares an element with the request's box.
bool overlaps(const SliceRequest& request, const std::vector<int64_t>& offsets, const Shape& shape);

}  // namespace dtrn::train
