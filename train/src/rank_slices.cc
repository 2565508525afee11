#include "rank_slices.h"

#include <map>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"

namespace dtrn::train {
namespace {

// Box `b` of a local tensor, placed in the global tensor.
std::vector<int64_t> global_offsets(const GlobalPlace& place, const Box& b) {
  std::vector<int64_t> out = place.offsets;
  for (size_t k = 0; k < out.size(); ++k) out[k] += b.offsets[k];
  return out;
}

// A host f32 copy that never shares memory with `t` (so training may go on changing `t`). From a GPU it
// lands in page-locked memory: the copy runs at DMA speed, and the next save reuses the same blocks.
Tensor host_copy(const Tensor& t) {
  const Tensor f32 = t.detach().to(DType::kF32);
  if (!f32.device().is_cuda()) return f32.to(Device::cpu()).clone();
  Tensor out = Tensor::empty_pinned(f32.shape(), DType::kF32);
  out.copy_(f32);
  return out;
}

// Box k of a piece: a view of the piece's flat elements, shaped as the box.
Tensor box_view(const Tensor& piece, int64_t start, const Box& b) {
  return piece.detach().reshape({-1}).narrow(0, start, shape_numel(b.shape)).reshape(b.shape);
}

std::map<std::string, model::NamedParameter> by_name(const std::vector<model::NamedParameter>& params) {
  std::map<std::string, model::NamedParameter> out;
  for (const model::NamedParameter& p : params) out.emplace(p.name, p);
  return out;
}

// Calls f(parameter, moment name, the parameter's global place, box, the box's data view) for each box of
// each moment of each piece.
template <typename F>
void for_each_moment_box(const std::map<std::string, model::NamedParameter>& params, const OptimizerState& opt,
                         F&& f) {
  for (const OptimizerState::Piece& piece : opt.pieces) {
    auto it = params.find(piece.param);
    DTRN_CHECK(it != params.end(), "optimizer piece of '", piece.param, "', which the model does not have");
    const Shape& local = it->second.tensor.shape();
    const GlobalPlace place = tp_place(local, it->second.tp);
    int64_t start = 0;
    for (const Box& b : flat_range_boxes(local, piece.begin, piece.exp_avg.numel())) {
      f(it->second, exp_avg_name(piece.param), place, b, box_view(piece.exp_avg, start, b));
      f(it->second, exp_avg_sq_name(piece.param), place, b, box_view(piece.exp_avg_sq, start, b));
      start += shape_numel(b.shape);
    }
  }
}

}  // namespace

std::string exp_avg_name(const std::string& param) { return param + ".exp_avg"; }
std::string exp_avg_sq_name(const std::string& param) { return param + ".exp_avg_sq"; }

std::vector<Box> flat_range_boxes(const Shape& shape, int64_t begin, int64_t length) {
  if (length <= 0) return {};
  if (shape.empty()) return {Box{}};
  const Shape inner(shape.begin() + 1, shape.end());
  const int64_t row = shape_numel(inner);
  const int64_t end = begin + length;
  std::vector<Box> out;
  // Part of one row: the boxes of the row's own range, with the row's index in front.
  auto within_row = [&](int64_t r, int64_t lo, int64_t hi) {
    for (Box b : flat_range_boxes(inner, lo, hi - lo)) {
      b.offsets.insert(b.offsets.begin(), r);
      b.shape.insert(b.shape.begin(), 1);
      out.push_back(std::move(b));
    }
  };
  int64_t first = begin / row;
  const int64_t last = end / row;  // rows [first, last) whole, once a partial first row is done
  if (first == (end - 1) / row && (begin % row != 0 || end % row != 0)) {
    within_row(first, begin % row, end - first * row);
    return out;
  }
  if (begin % row != 0) within_row(first++, begin % row, row);
  if (last > first) {
    Box whole{std::vector<int64_t>(shape.size(), 0), shape};
    whole.offsets[0] = first;
    whole.shape[0] = last - first;
    out.push_back(std::move(whole));
  }
  if (end % row != 0) within_row(last, 0, end % row);
  return out;
}

GlobalPlace tp_place(const Shape& local, const model::TensorParallelSlice& tp) {
  GlobalPlace place{local, std::vector<int64_t>(local.size(), 0)};
  if (tp.dim < 0) return place;
  DTRN_CHECK(static_cast<size_t>(tp.dim) < local.size() && tp.rank >= 0 && tp.rank < tp.size,
             "tensor-parallel slice dim ", tp.dim, " rank ", tp.rank, " of ", tp.size, " for a tensor of rank ",
             local.size());
  place.global_shape[tp.dim] = local[tp.dim] * tp.size;
  place.offsets[tp.dim] = local[tp.dim] * tp.rank;
  return place;
}

std::vector<TensorSlice> rank_slices(const std::vector<model::NamedParameter>& params,
                                     const OptimizerState& optimizer, const RankPlace& place) {
  // Replicated over TP: only TP rank 0 saves it; over DP: only DP rank 0 (moments too, without ZeRO-1).
  auto saves = [&](const model::NamedParameter& p, bool sharded_over_dp) {
    return (sharded_over_dp || place.dp_rank == 0) && (p.tp.dim >= 0 || place.tp_rank == 0);
  };
  std::vector<TensorSlice> out;
  for (const model::NamedParameter& p : params) {
    if (!saves(p, false)) continue;
    const GlobalPlace g = tp_place(p.tensor.shape(), p.tp);
    out.push_back({p.name, g.global_shape, g.offsets, host_copy(p.tensor)});
  }
  for_each_moment_box(by_name(params), optimizer, [&](const model::NamedParameter& p, const std::string& name,
                                             const GlobalPlace& g, const Box& b, const Tensor& data) {
    if (saves(p, optimizer.sharded_over_dp)) out.push_back({name, g.global_shape, global_offsets(g, b), host_copy(data)});
  });
  return out;
}

RankRequests rank_requests(const std::vector<model::NamedParameter>& params, const OptimizerState* optimizer) {
  RankRequests out;
  auto request = [&](const std::string& name, const GlobalPlace& g, std::vector<int64_t> offsets, const Tensor& target) {
    out.requests.push_back({name, g.global_shape, std::move(offsets), Tensor::empty(target.shape(), DType::kF32, Device::cpu())});
    out.targets.push_back(target);
  };
  for (const model::NamedParameter& p : params) {
    const GlobalPlace g = tp_place(p.tensor.shape(), p.tp);
    request(p.name, g, g.offsets, p.tensor.detach());
    out.known.insert({p.name, exp_avg_name(p.name), exp_avg_sq_name(p.name)});
  }
  if (optimizer) {
    for_each_moment_box(by_name(params), *optimizer, [&](const model::NamedParameter&, const std::string& name,
                                                const GlobalPlace& g, const Box& b, const Tensor& view) {
      request(name, g, global_offsets(g, b), view);
    });
  }
  return out;
}

Status load_rank_slices(const std::string& where, std::vector<TensorSlice> saved, const RankRequests& wanted,
                        const std::vector<SliceBox>& unread) {
  std::set<std::string> requested;
  for (const SliceRequest& r : wanted.requests) requested.insert(r.name);
  std::erase_if(saved, [&](const TensorSlice& s) { return wanted.known.count(s.name) && !requested.count(s.name); });
  DTRN_RETURN_IF_ERROR(fill_slices(where, saved, wanted.requests, unread));
  NoGradGuard no_grad;
  for (size_t i = 0; i < wanted.requests.size(); ++i) wanted.targets[i].copy_(wanted.requests[i].out);
  return Status::Ok();
}

Status load_rank_shards(const std::string& dir, const std::vector<ShardEntry>& shards, const RankRequests& wanted) {
  std::multimap<std::string, const SliceRequest*> by_name;
  for (const SliceRequest& r : wanted.requests) by_name.emplace(r.name, &r);
  // A stranger is read too, so that fill_slices names it.
  auto needed = [&](const std::string& name, const std::vector<int64_t>& offsets, const Shape& shape) {
    if (!wanted.known.count(name)) return true;
    auto [lo, hi] = by_name.equal_range(name);
    for (auto it = lo; it != hi; ++it) {
      if (overlaps(*it->second, offsets, shape)) return true;
    }
    return false;
  };
  std::vector<TensorSlice> saved;
  std::vector<SliceBox> unread;
  for (const ShardEntry& e : shards) {
    auto slices = read_shard(dir, e, needed, &unread);
    if (!slices.ok()) return slices.status();
    for (TensorSlice& s : *slices) saved.push_back(std::move(s));
  }
  return load_rank_slices(dir, std::move(saved), wanted, unread);
}

}  // namespace dtrn::train
