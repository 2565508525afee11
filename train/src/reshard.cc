#include "reshard.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace dtrn::train {
namespace {

// Row-major strides in elements.
std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t k = shape.size(); k-- > 1;) s[k - 1] = s[k] * shape[k];
  return s;
}

struct Box {
  std::vector<int64_t> lo, hi;  // [lo, hi) per dimension, global coordinates
};

Box box_of(const std::vector<int64_t>& offsets, const Shape& shape) {
  Box b{offsets, offsets};
  for (size_t k = 0; k < shape.size(); ++k) b.hi[k] += shape[k];
  return b;
}

// The intersection of two boxes; false when it is empty.
bool intersect(const Box& a, const Box& b, Box* out) {
  *out = a;
  for (size_t k = 0; k < a.lo.size(); ++k) {
    out->lo[k] = std::max(a.lo[k], b.lo[k]);
    out->hi[k] = std::min(a.hi[k], b.hi[k]);
    if (out->lo[k] >= out->hi[k]) return false;
  }
  return true;
}

int64_t volume(const Box& b) {
  int64_t v = 1;
  for (size_t k = 0; k < b.lo.size(); ++k) v *= b.hi[k] - b.lo[k];
  return v;
}

// Copies the elements of `region` from the box `src` (data `s`) to the box `dst` (data `d`), one
// contiguous run of the last dimension at a time. A rank-0 tensor is one element.
void copy_region(const Box& region, const Box& src, const float* s, const Box& dst, float* d) {
  const size_t rank = region.lo.size();
  if (rank == 0) {
    *d = *s;
    return;
  }
  Shape src_shape(rank), dst_shape(rank);
  for (size_t k = 0; k < rank; ++k) {
    src_shape[k] = src.hi[k] - src.lo[k];
    dst_shape[k] = dst.hi[k] - dst.lo[k];
  }
  const auto ss = strides_of(src_shape), ds = strides_of(dst_shape);
  const int64_t run = region.hi[rank - 1] - region.lo[rank - 1];
  std::vector<int64_t> at(region.lo);  // the current row's start, global coordinates
  while (true) {
    int64_t so = 0, dof = 0;
    for (size_t k = 0; k < rank; ++k) {
      so += (at[k] - src.lo[k]) * ss[k];
      dof += (at[k] - dst.lo[k]) * ds[k];
    }
    std::memcpy(d + dof, s + so, run * sizeof(float));
    size_t k = rank - 1;  // advance the row index, last dimension excluded
    while (k-- > 0) {
      if (++at[k] < region.hi[k]) break;
      at[k] = region.lo[k];
    }
    if (k == static_cast<size_t>(-1)) return;
  }
}

}  // namespace

bool overlaps(const SliceRequest& request, const std::vector<int64_t>& offsets, const Shape& shape) {
  Box part;
  return offsets.size() == request.offsets.size() &&
         intersect(box_of(request.offsets, request.out.shape()), box_of(offsets, shape), &part);
}

Status fill_slices(const std::string& where, const std::vector<TensorSlice>& saved,
                   const std::vector<SliceRequest>& requests, const std::vector<SliceBox>& unread) {
  std::map<std::string, std::vector<const TensorSlice*>> by_name;
  for (const TensorSlice& s : saved) by_name[s.name].push_back(&s);
  std::set<std::string> requested;
  for (const SliceRequest& r : requests) requested.insert(r.name);
  for (const TensorSlice& s : saved) {  // in file order, so the first one named is the first one met
    if (!requested.count(s.name)) {
      return Status::InvalidArgument(where + ": unexpected tensor '" + s.name + "', which this model does not have");
    }
  }
  for (const auto& [name, slices] : by_name) {
    int64_t total = 0;
    for (const TensorSlice* s : slices) {
      if (s->global_shape != slices[0]->global_shape) {
        return Status::DataLoss(where + ": tensor '" + name + "': shards disagree on its global shape");
      }
      total += shape_numel(s->data.shape());
    }
    for (const SliceBox& u : unread) {
      if (u.name != name) continue;
      if (u.global_shape != slices[0]->global_shape) {
        return Status::DataLoss(where + ": tensor '" + name + "': shards disagree on its global shape");
      }
      total += shape_numel(u.shape);
    }
    if (total != shape_numel(slices[0]->global_shape)) {
      return Status::DataLoss(where + ": tensor '" + name + "': the shards hold " + std::to_string(total) +
                              " elements of its " + std::to_string(shape_numel(slices[0]->global_shape)) +
                              " (a shard is missing or slices overlap)");
    }
  }
  // Check every request before copying into any.
  for (const SliceRequest& r : requests) {
    auto it = by_name.find(r.name);
    if (it == by_name.end()) return Status::InvalidArgument(where + ": missing tensor '" + r.name + "'");
    if (it->second[0]->global_shape != r.global_shape) {
      return Status::InvalidArgument(where + ": tensor '" + r.name + "' has shape " +
                                     shape_str(it->second[0]->global_shape) + ", the model expects " +
                                     shape_str(r.global_shape));
    }
    const Box want = box_of(r.offsets, r.out.shape());
    int64_t covered = 0;
    for (const TensorSlice* s : it->second) {
      Box part;
      if (intersect(want, box_of(s->offsets, s->data.shape()), &part)) covered += volume(part);
    }
    if (covered != shape_numel(r.out.shape())) {
      return Status::DataLoss(where + ": tensor '" + r.name + "': the saved slices cover " + std::to_string(covered) +
                              " of the " + std::to_string(shape_numel(r.out.shape())) + " elements requested");
    }
  }
  for (const SliceRequest& r : requests) {
    const Box want = box_of(r.offsets, r.out.shape());
    for (const TensorSlice* s : by_name[r.name]) {
      const Box have = box_of(s->offsets, s->data.shape());
      Box part;
      if (intersect(want, have, &part)) {
        copy_region(part, have, s->data.data<float>(), want, r.out.data<float>());
      }
    }
  }
  return Status::Ok();
}

}  // namespace dtrn::train
