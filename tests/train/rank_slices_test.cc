// Which rank saves and loads what (train/src/rank_slices.h), with hand-built layouts: every parameter
// carries its tensor-parallel slice (NamedParameter::tp), ZeRO-1 pieces cut the flattened local tensors
// anywhere, and a checkpoint written by the ranks of one layout (through real shard files) is loaded by
// every rank of another. The reference is the global tensors themselves: every loaded element must equal
// the element of the global tensor at its place, bit for bit (only copies are involved).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "checkpoint_format.h"
#include "rank_slices.h"

namespace dtrn::train {
namespace {

using ::testing::HasSubstr;

// The flat indices a box covers, in row-major order of the box, as indices of the whole tensor.
std::vector<int64_t> box_indices(const Shape& shape, const Box& b) {
  std::vector<int64_t> out;
  std::vector<int64_t> at(b.shape.size(), 0);
  for (int64_t n = 0; n < shape_numel(b.shape); ++n) {
    int64_t flat = 0;
    for (size_t k = 0; k < shape.size(); ++k) flat = flat * shape[k] + b.offsets[k] + at[k];
    out.push_back(flat);
    for (size_t k = at.size(); k-- > 0;) {
      if (++at[k] < b.shape[k]) break;
      at[k] = 0;
    }
  }
  return out;
}

TEST(RankSlices, FlatRangesAreCoveredByFewBoxesInOrder) {
  for (const Shape& shape : {Shape{7}, Shape{5, 6}, Shape{3, 4, 5}, Shape{1, 1, 9}}) {
    const int64_t n = shape_numel(shape);
    for (int64_t begin = 0; begin < n; ++begin) {
      for (int64_t length = 1; begin + length <= n; ++length) {
        std::vector<int64_t> got;
        const auto boxes = flat_range_boxes(shape, begin, length);
        for (const Box& b : boxes) {
          for (int64_t i : box_indices(shape, b)) got.push_back(i);
        }
        std::vector<int64_t> want(length);
        for (int64_t i = 0; i < length; ++i) want[i] = begin + i;
        ASSERT_EQ(got, want) << "shape rank " << shape.size() << " begin " << begin << " length " << length;
        // At most a partial row, whole rows and a partial row at every level.
        EXPECT_LE(boxes.size(), 2 * shape.size() - 1);
      }
    }
  }
}

// A toy model: w [8, 6] split over TP along rows, u [6, 8] along columns, b [6] replicated.
struct Global {
  std::string name;
  Shape shape;
  int tp_dim;
  Tensor value, exp_avg, exp_avg_sq;
};

std::vector<Global> globals() {
  std::vector<Global> g = {{"w", {8, 6}, 0, {}, {}, {}}, {"u", {6, 8}, 1, {}, {}, {}}, {"b", {6}, -1, {}, {}, {}}};
  for (size_t i = 0; i < g.size(); ++i) {
    g[i].value = Tensor::normal(g[i].shape, 0, 1, 1, i);
    g[i].exp_avg = Tensor::normal(g[i].shape, 0, 1, 2, i);
    g[i].exp_avg_sq = Tensor::normal(g[i].shape, 0, 1, 3, i);
  }
  return g;
}

Tensor local_of(const Tensor& global, int dim, int64_t tp_rank, int64_t tp) {
  if (dim < 0) return global.clone();
  const int64_t n = global.shape()[dim] / tp;
  return global.narrow(dim, tp_rank * n, n).contiguous().clone();
}

// One rank of a layout: its local parameters (fresh copies of the global slices, or zeros to load into)
// and its optimizer pieces. ZeRO-1 concatenates the local tensors and cuts the concatenation into dp
// equal ranges (as the gradient buckets do), so pieces start and end inside rows.
struct Rank {
  RankPlace place;
  std::vector<model::NamedParameter> params;
  OptimizerState optimizer;
};

Rank make_rank(const std::vector<Global>& g, CheckpointLayout layout, int64_t dp_rank, int64_t tp_rank, bool empty) {
  Rank r{{layout, dp_rank, tp_rank}, {}, {}};
  int64_t total = 0;
  for (const Global& x : g) total += shape_numel(x.shape) / (x.tp_dim < 0 ? 1 : layout.tp);
  const int64_t per = (total + layout.dp - 1) / layout.dp;
  const int64_t lo = layout.zero ? dp_rank * per : 0, hi = layout.zero ? std::min(total, lo + per) : total;
  int64_t at = 0;
  for (const Global& x : g) {
    auto local = [&](const Tensor& t) {
      Tensor l = local_of(t, x.tp_dim, tp_rank, layout.tp);
      return empty ? Tensor::zeros(l.shape(), DType::kF32, Device::cpu()) : l;
    };
    model::NamedParameter p;
    p.name = x.name;
    p.tensor = local(x.value);
    p.tp = x.tp_dim < 0 ? model::TensorParallelSlice{} : model::TensorParallelSlice{x.tp_dim, tp_rank, layout.tp};
    r.params.push_back(p);
    const int64_t n = p.tensor.numel();
    const int64_t b = std::max(lo, at), e = std::min(hi, at + n);
    if (b < e) {
      auto piece = [&](const Tensor& t) { return local(t).reshape({-1}).narrow(0, b - at, e - b).contiguous().clone(); };
      r.optimizer.pieces.push_back({x.name, b - at, piece(x.exp_avg), piece(x.exp_avg_sq)});
    }
    at += n;
  }
  r.optimizer.sharded_over_dp = layout.zero == 1;
  return r;
}

// Writes every rank's slices of `layout` as shard files under `dir`; returns their entries, and counts
// the slices of each tensor in `slices_of`.
std::vector<ShardEntry> save_layout(const std::vector<Global>& g, CheckpointLayout layout, const std::string& dir,
                                    std::map<std::string, int>* slices_of) {
  std::vector<ShardEntry> all;
  for (int64_t d = 0; d < layout.dp; ++d) {
    for (int64_t t = 0; t < layout.tp; ++t) {
      const Rank r = make_rank(g, layout, d, t, false);
      const std::vector<TensorSlice> mine = rank_slices(r.params, r.optimizer, r.place);
      const int64_t rank = d * layout.tp + t;
      if (mine.empty()) continue;
      auto e = write_shard(Env::posix(), dir + "/" + shard_file_name(rank, layout.dp * layout.tp, "x"), rank, mine);
      EXPECT_TRUE(e.ok()) << e.status().message();
      for (const TensorSlice& s : mine) ++(*slices_of)[s.name];
      all.push_back(*e);
    }
  }
  return all;
}

class RankSlicesFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/rank-slices-" + std::to_string(::getpid()) + "-" +
           std::to_string(reinterpret_cast<uintptr_t>(this));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

class RankSlicesLayouts : public RankSlicesFiles,
                          public ::testing::WithParamInterface<std::pair<CheckpointLayout, CheckpointLayout>> {};

TEST_P(RankSlicesLayouts, EveryRankOfAnotherLayoutLoadsItsBoxesExactly) {
  const auto [saved_layout, loaded_layout] = GetParam();
  const std::vector<Global> g = globals();
  std::map<std::string, int> slices_of;
  const std::vector<ShardEntry> saved = save_layout(g, saved_layout, dir_, &slices_of);
  // Replicated data once: b by one rank; w and u by one rank per TP slice; the moments of b by one rank
  // unless ZeRO-1 cuts them (then by the DP ranks whose ranges cover it, within TP rank 0).
  EXPECT_EQ(slices_of["b"], 1);
  EXPECT_EQ(slices_of["w"], saved_layout.tp);
  if (!saved_layout.zero) {
    EXPECT_EQ(slices_of["b.exp_avg"], 1);
  }

  for (int64_t d = 0; d < loaded_layout.dp; ++d) {
    for (int64_t t = 0; t < loaded_layout.tp; ++t) {
      SCOPED_TRACE("loading rank dp " + std::to_string(d) + " tp " + std::to_string(t));
      Rank fresh = make_rank(g, loaded_layout, d, t, true);
      const Rank want = make_rank(g, loaded_layout, d, t, false);
      const Status loaded = load_rank_shards(dir_, saved, rank_requests(fresh.params, &fresh.optimizer));
      ASSERT_TRUE(loaded.ok()) << loaded.message();
      for (size_t i = 0; i < fresh.params.size(); ++i) {
        EXPECT_EQ(fresh.params[i].tensor.to_vector(), want.params[i].tensor.to_vector()) << fresh.params[i].name;
      }
      ASSERT_EQ(fresh.optimizer.pieces.size(), want.optimizer.pieces.size());
      for (size_t i = 0; i < fresh.optimizer.pieces.size(); ++i) {
        const auto& f = fresh.optimizer.pieces[i];
        const auto& w = want.optimizer.pieces[i];
        EXPECT_EQ(f.exp_avg.to_vector(), w.exp_avg.to_vector()) << f.param << " from " << f.begin;
        EXPECT_EQ(f.exp_avg_sq.to_vector(), w.exp_avg_sq.to_vector()) << f.param << " from " << f.begin;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    SaveThenLoad, RankSlicesLayouts,
    ::testing::Values(std::make_pair(CheckpointLayout{2, 2, 1}, CheckpointLayout{1, 1, 0}),
                      std::make_pair(CheckpointLayout{2, 2, 1}, CheckpointLayout{4, 1, 1}),
                      std::make_pair(CheckpointLayout{2, 2, 0}, CheckpointLayout{1, 2, 1}),
                      std::make_pair(CheckpointLayout{1, 1, 0}, CheckpointLayout{2, 2, 1}),
                      std::make_pair(CheckpointLayout{3, 1, 1}, CheckpointLayout{1, 2, 0}),
                      std::make_pair(CheckpointLayout{1, 2, 0}, CheckpointLayout{3, 1, 1})));

// A rank reads only the slices that share an element with its boxes (at tp = 2, not the other TP rank's
// halves of w and u), verifies what it reads, and still checks from the unread slices' places that every
// element of a tensor it loads was saved once.
TEST_F(RankSlicesFiles, ARankReadsOnlyWhatItNeedsAndStillChecksTheWhole) {
  const std::vector<Global> g = globals();
  std::map<std::string, int> slices_of;
  const std::vector<ShardEntry> saved = save_layout(g, {2, 2, 1}, dir_, &slices_of);
  Rank fresh = make_rank(g, {1, 2, 0}, 0, 1, true);
  const RankRequests wanted = rank_requests(fresh.params, &fresh.optimizer);
  auto needed = [&](const std::string& name, const std::vector<int64_t>& offsets, const Shape& shape) {
    for (const SliceRequest& r : wanted.requests) {
      if (r.name == name && overlaps(r, offsets, shape)) return true;
    }
    return false;
  };
  std::vector<TensorSlice> read;
  std::vector<SliceBox> unread;
  for (const ShardEntry& e : saved) {
    auto slices = read_shard(dir_, e, needed, &unread);
    ASSERT_TRUE(slices.ok()) << slices.status().message();
    for (TensorSlice& s : *slices) read.push_back(std::move(s));
  }
  int total = 0;
  for (const auto& [name, n] : slices_of) total += n;
  EXPECT_EQ(read.size() + unread.size(), static_cast<size_t>(total));
  for (const SliceBox& u : unread) {
    EXPECT_TRUE(u.name == "w" || u.name == "u" || u.name.rfind("w.", 0) == 0 || u.name.rfind("u.", 0) == 0)
        << u.name << ": b is whole on every TP rank, so it is always needed";
    EXPECT_FALSE(needed(u.name, u.offsets, u.shape)) << u.name;
  }
  EXPECT_FALSE(unread.empty());
  ASSERT_TRUE(load_rank_slices("ckpt", read, wanted, unread).ok());
  // An unread slice missing from the record: the tensor is no longer saved exactly once.
  std::vector<SliceBox> fewer(unread.begin() + 1, unread.end());
  EXPECT_THAT(load_rank_slices("ckpt", read, wanted, fewer).message(), HasSubstr("a shard is missing or slices overlap"));
  // A flipped bit in a slice this rank reads is found by its own read.
  const std::string file = dir_ + "/" + saved[1].file;
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) - 4));
    f.put('\x7f');
  }
  EXPECT_THAT(load_rank_shards(dir_, saved, wanted).message(), HasSubstr("sha256 mismatch"));
}

TEST(RankSlices, AStrangerTensorIsStillAnError) {
  // Passing over other ranks' pieces must not hide a tensor the model does not have.
  const std::vector<Global> g = globals();
  Rank r = make_rank(g, {1, 1, 0}, 0, 0, false);
  std::vector<TensorSlice> saved = rank_slices(r.params, r.optimizer, r.place);
  saved.push_back({"lm_head", {2}, {0}, Tensor::zeros({2}, DType::kF32, Device::cpu())});
  Rank fresh = make_rank(g, {1, 1, 0}, 0, 0, true);
  EXPECT_THAT(load_rank_slices("ckpt", saved, rank_requests(fresh.params, nullptr)).message(),
              HasSubstr("unexpected tensor 'lm_head'"));
}

}  // namespace
}  // namespace dtrn::train
