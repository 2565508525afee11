// The tensor-parallel DTRNet model (model.h, Note [Tensor-parallel DTRNet]) against the same model
// whole in this process. `Mpirun.TensorParallelModel*` starts this binary under `mpirun
// --oversubscribe -np 2` with a filter for `TensorParallelModel.*`, whose tests skip when the
// process was not launched as a rank; each rank builds the whole reference itself and compares its
// slices with it.
//
// Tolerances: f64 on the CPU. The TP forward sums each output over heads / hidden units /
// vocabulary in two partial sums joined by the all-reduce instead of one running sum, so results
// agree to rounding: 1e-10 relative on values of order 1 (observed ~1e-15). Routing is compared
// exactly: the router reads the replicated residual, and p_a near 0.5 lies far more than 1e-10 from
// the threshold for these draws.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <memory>
#include <string>

#include "dtrn/model/model.h"
#include "dtrn/model/vocab_parallel.h"
#include "dtrn/parallel/process_groups.h"
#include "dtrn/parallel/tensor_parallel.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::parallel {
namespace {

constexpr double kTol = 1e-10;

// The world as one TP group (dp 1), joined once per process; null when not launched as a rank.
ProcessGroups* tp_world() {
  static std::unique_ptr<ProcessGroups> joined;
  auto launch = read_launch_env();
  if (!launch.ok() || launch->world_size < 2) return nullptr;
  if (!joined) {
    ParallelOptions o;
    o.dp = 1;
    o.tp = launch->world_size;
    o.timeout_s = 60;
    auto g = ProcessGroups::Join(o);
    EXPECT_TRUE(g.ok()) << g.status().message();
    if (!g.ok()) return nullptr;
    joined = std::move(*g);
  }
  return joined.get();
}

// d 16, 4 heads of 4 sharing 2 KV heads, d_ff 24, a vocabulary of 120 padded to 128: with 2 ranks
// each holds 2 heads, 1 KV head, 12 hidden units and 64 rows of the vocabulary, the second 56 real
// ones.
model::ModelConfig small_config(const std::string& layout) {
  model::ModelConfig c;
  c.d_model = 16;
  c.n_layers = static_cast<int64_t>(layout.size());
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.d_ff = 24;
  c.vocab_size = 120;
  c.seq_len = 12;
  c.layout = layout;
  return c;
}

void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const auto a = got.to_vector(), b = want.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], b[i], kTol * (1 + std::abs(b[i]))) << what << " [" << i << "]";
  }
}

// Rank r's slice of a whole tensor along dim (-1: all of it).
Tensor slice_of(const Tensor& whole, int dim, int64_t rank, int64_t size) {
  if (dim < 0) return whole;
  const int64_t n = whole.size(dim) / size;
  return whole.narrow(dim, rank * n, n);
}

// Every rank's copy of t is bit for bit the same (max and min over the group equal it).
void expect_replicated(Communicator& tp, const Tensor& t, const std::string& what) {
  Tensor hi = t.detach().contiguous().clone(), lo = t.detach().contiguous().clone();
  tp.all_reduce(hi, ReduceOp::kMax);
  tp.all_reduce(lo, ReduceOp::kMin);
  EXPECT_EQ(hi.to_vector(), t.to_vector()) << what;
  EXPECT_EQ(lo.to_vector(), t.to_vector()) << what;
}

Tensor leaf(const Tensor& t) {
  Tensor l = t.detach().contiguous().clone();
  l.set_requires_grad(true);
  return l;
}

class TensorParallelModel : public ::testing::Test {
 protected:
  void SetUp() override {
    groups_ = tp_world();
    if (groups_ == nullptr) GTEST_SKIP() << "not a rank of a job";
    group_ = std::make_unique<TensorParallelGroup>(groups_->tp());
  }
  ProcessGroups* groups_ = nullptr;
  std::unique_ptr<TensorParallelGroup> group_;
};

// One D block and one T block, each run whole and split by heads and hidden units: outputs, the
// input's gradient, every slice's gradient against the matching part of the whole one, and the
// replicated weights' (router, norms) gradients equal to the whole ones and the same on every rank.
TEST_F(TensorParallelModel, OneBlockForwardAndBackwardEqualTheWholeBlock) {
  const model::ModelConfig c = small_config("D");
  const int64_t p = group_->size(), r = group_->rank(), b = 2, t = 12, d = c.head_dim();
  auto normal = [](const Shape& shape, uint64_t stream, double std) {
    return leaf(Tensor::normal(shape, 0.0, std, 11, stream, 0, DType::kF64));
  };
  model::BlockWeights whole;
  whole.norm_in = leaf(add_scalar(normal({16}, 1, 0.1), 1.0));
  whole.norm_post = leaf(add_scalar(normal({16}, 2, 0.1), 1.0));
  whole.attn = {normal({16, 16}, 3, 0.3), normal({8, 16}, 4, 0.3), normal({8, 16}, 5, 0.3),
                normal({16, 16}, 6, 0.3)};
  whole.mlp = {normal({24, 16}, 7, 0.3), normal({24, 16}, 8, 0.3), normal({16, 24}, 9, 0.3)};
  // Router weights large enough that p_a spreads well beyond 0.5 both ways: both paths run.
  whole.router = {normal({8, 16}, 10, 0.5), normal({8}, 11, 0.1), normal({2, 8}, 12, 0.5),
                  normal({2}, 13, 0.1)};
  const std::vector<std::pair<std::string, std::pair<Tensor*, int>>> named = {
      {"norm_in", {&whole.norm_in, -1}},     {"norm_post", {&whole.norm_post, -1}},
      {"wq", {&whole.attn.wq, 0}},           {"wk", {&whole.attn.wk, 0}},
      {"wv", {&whole.attn.wv, 0}},           {"wo", {&whole.attn.wo, 1}},
      {"gate", {&whole.mlp.gate, 0}},        {"up", {&whole.mlp.up, 0}},
      {"down", {&whole.mlp.down, 1}},        {"router.w1", {&whole.router.w1, -1}},
      {"router.b1", {&whole.router.b1, -1}}, {"router.w2", {&whole.router.w2, -1}},
      {"router.b2", {&whole.router.b2, -1}}};
  // The slices in the same layout: heads d apart, so a split of rows / columns by P is a split by
  // heads.
  model::BlockWeights mine = whole;
  std::vector<Tensor*> mine_tensors = {
      &mine.norm_in,   &mine.norm_post, &mine.attn.wq,  &mine.attn.wk,  &mine.attn.wv,
      &mine.attn.wo,   &mine.mlp.gate,  &mine.mlp.up,   &mine.mlp.down, &mine.router.w1,
      &mine.router.b1, &mine.router.w2, &mine.router.b2};
  for (size_t i = 0; i < named.size(); ++i) {
    *mine_tensors[i] = leaf(slice_of(*named[i].second.first, named[i].second.second, r, p));
  }
  EXPECT_EQ(mine.attn.wq.size(0), c.n_heads / p * d);

  Tensor x_whole = normal({b, t, 16}, 20, 1.0), x_mine = leaf(x_whole);
  Tensor probe = Tensor::normal({b, t, 16}, 0.0, 1.0, 11, 21, 0, DType::kF64);
  model::RoutingStats st_whole, st_mine;
  Tensor out_whole =
      model::routed_block_forward(c, whole, x_whole, model::FallbackDraw{}, &st_whole);
  Tensor out_mine = model::routed_block_forward(c, mine, x_mine, model::FallbackDraw{}, &st_mine, {},
                                                group_.get());
  ASSERT_GT(st_whole.routed, 0);
  ASSERT_LT(st_whole.routed, b * t);
  EXPECT_EQ(st_mine.routed, st_whole.routed);
  expect_close(out_mine, out_whole, "D block output");
  expect_replicated(groups_->tp(), out_mine, "D block output");
  // The loss sees the routing statistics too, so the router's gradient has both of its sources.
  add(sum(mul(out_whole, probe)), st_whole.s).backward();
  add(sum(mul(out_mine, probe)), st_mine.s).backward();
  expect_close(x_mine.grad(), x_whole.grad(), "D block input gradient");
  for (size_t i = 0; i < named.size(); ++i) {
    const auto& [name, what] = named[i];
    expect_close(mine_tensors[i]->grad(), slice_of(what.first->grad(), what.second, r, p),
                 "D block " + name);
    if (what.second < 0)
      expect_replicated(groups_->tp(), mine_tensors[i]->grad(), "D block " + name);
  }

  // The T block with the same attention and MLP weights.
  Tensor y_whole = leaf(x_whole), y_mine = leaf(x_whole);
  Tensor dense_whole = model::dense_block_forward(c, whole, y_whole);
  Tensor dense_mine = model::dense_block_forward(c, mine, y_mine, nullptr, group_.get());
  expect_close(dense_mine, dense_whole, "T block output");
  sum(mul(dense_whole, probe)).backward();
  sum(mul(dense_mine, probe)).backward();
  expect_close(y_mine.grad(), y_whole.grad(), "T block input gradient");
}

// A whole model with T and D layers, split over the group: init gives each rank its slice of the
// single process's weights (and the parameter names and global shapes stay), the loss and per-layer
// routing equal the whole model's, each rank's gradients are its slices of the whole gradients, the
// replicated parameters' gradients agree bit for bit across ranks, and logits() gathers the whole
// vocabulary.
TEST_F(TensorParallelModel, ModelMatchesTheWholeModel) {
  const model::ModelConfig c = small_config("TDDT");
  model::RoutingConfig routing;
  routing.balance_weight = 0.5;  // every routing term contributes to the routers' gradients
  model::DtrnModel whole(c, routing, Device::cpu(), DType::kF64);
  model::DtrnModel mine(c, routing, Device::cpu(), DType::kF64, group_.get());
  whole.init(3);
  mine.init(3);
  const auto pw = whole.parameters(), pm = mine.parameters();
  ASSERT_EQ(pw.size(), pm.size());
  for (size_t i = 0; i < pw.size(); ++i) {
    ASSERT_EQ(pm[i].name, pw[i].name);
    EXPECT_EQ(pm[i].tp.rank, group_->rank());
    EXPECT_EQ(pm[i].tp.size, group_->size());
    Shape global = pm[i].tensor.shape();
    if (pm[i].tp.dim >= 0) global[pm[i].tp.dim] *= pm[i].tp.size;
    EXPECT_EQ(global, pw[i].tensor.shape()) << pw[i].name;
    EXPECT_EQ(pm[i].tensor.to_vector(),
              slice_of(pw[i].tensor, pm[i].tp.dim, group_->rank(), group_->size()).to_vector())
        << pw[i].name;
  }
  for (const char* split : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "embed_tokens"}) {
    for (const auto& p : pm) {
      if (p.name.find(split) != std::string::npos) {
        EXPECT_EQ(p.tp.dim, 0) << p.name;
      }
    }
  }
  for (const auto& p : pm) {
    const bool row_parallel =
        p.name.find("o_proj") != std::string::npos || p.name.find("down_proj") != std::string::npos;
    const bool replicated =
        p.name.find("norm") != std::string::npos || p.name.find("router") != std::string::npos;
    if (row_parallel) {
      EXPECT_EQ(p.tp.dim, 1) << p.name;
    }
    if (replicated) {
      EXPECT_EQ(p.tp.dim, -1) << p.name;
    }
  }

  // Two rows of 12 tokens, with ids in every rank's part of the vocabulary and some ignored
  // targets.
  std::vector<int64_t> ids(24), targets(24);
  for (int64_t i = 0; i < 24; ++i) {
    ids[i] = (i * 37 + 5) % c.vocab_size;
    targets[i] = i % 7 == 3 ? -100 : (i * 53 + 11) % c.vocab_size;
  }
  const Tensor id_t = Tensor::from_ints(ids, {2, 12}, DType::kI64),
               tg_t = Tensor::from_ints(targets, {2, 12}, DType::kI64);
  model::ForwardOptions fo;
  fo.training = true;
  fo.seed = 9;
  model::ForwardResult rw = whole.forward(id_t, tg_t, fo), rm = mine.forward(id_t, tg_t, fo);
  expect_close(rm.ce, rw.ce, "ce");
  expect_close(rm.loss, rw.loss, "loss");
  EXPECT_EQ(rm.targets_counted, rw.targets_counted);
  ASSERT_EQ(rm.layers.size(), 2u);
  for (size_t l = 0; l < rm.layers.size(); ++l) {
    EXPECT_EQ(rm.layers[l].f, rw.layers[l].f) << "layer " << rm.layers[l].layer;
    EXPECT_EQ(rm.layers[l].fallback, rw.layers[l].fallback);
  }
  rw.loss.backward();
  rm.loss.backward();
  for (size_t i = 0; i < pw.size(); ++i) {
    expect_close(pm[i].tensor.grad(),
                 slice_of(pw[i].tensor.grad(), pm[i].tp.dim, group_->rank(), group_->size()),
                 pw[i].name + " gradient");
    if (pm[i].tp.dim < 0)
      expect_replicated(groups_->tp(), pm[i].tensor.grad(), pw[i].name + " gradient");
  }
  NoGradGuard no_grad;
  expect_close(mine.logits(id_t), whole.logits(id_t), "logits");
}

// The agreement check catches ranks whose routers differ (here rank 1's routes every token to
// attention): every rank stops in the same forward, naming the layer.
TEST_F(TensorParallelModel, RanksThatRouteDifferentlyAreCaught) {
  model::DtrnModel mine(small_config("TD"), model::RoutingConfig{}, Device::cpu(), DType::kF64,
                        group_.get());
  mine.init(3);
  if (group_->rank() == 1) {
    for (const auto& p : mine.parameters()) {
      if (p.name == "model.layers.1.router.2.bias")
        p.tensor.copy_(Tensor::from_vector({50, 0}, {2}, DType::kF64));
    }
  }
  const Tensor ids = Tensor::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {1, 8}, DType::kI64);
  try {
    mine.forward(ids, ids, {});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor parallelism: layer 1 routed"), std::string::npos)
        << e.what();
  }
}

// Vocabulary-parallel cross-entropy equals cross_entropy() over the whole logits, padding excluded,
// with every target ignored too (0, as cross_entropy gives).
TEST_F(TensorParallelModel, VocabParallelCrossEntropyEqualsTheWholeOne) {
  const int64_t p = group_->size(), r = group_->rank(), n = 6, v = 16 * p, classes = v - 5;
  Tensor whole = leaf(Tensor::normal({n, v}, 0.0, 2.0, 4, 1, 0, DType::kF64));
  Tensor mine = leaf(slice_of(whole, 1, r, p));
  const Tensor targets = Tensor::from_ints({0, classes - 1, -100, 7, v / 2, 3}, {n}, DType::kI64);
  Tensor want = cross_entropy(whole, targets, -100, classes);
  Tensor got = model::vocab_parallel_cross_entropy(mine, targets, -100, classes, *group_);
  expect_close(got, want, "cross-entropy");
  want.backward();
  got.backward();
  expect_close(mine.grad(), slice_of(whole.grad(), 1, r, p), "logits gradient");
  const Tensor ignored = Tensor::from_ints(std::vector<int64_t>(n, -100), {n}, DType::kI64);
  EXPECT_EQ(model::vocab_parallel_cross_entropy(mine, ignored, -100, classes, *group_).item(), 0.0);
}

TEST(TensorParallelConfig, ASplitThatDoesNotDivideIsOneLineNamingTheKey) {
  model::ModelConfig c = small_config("TD");
  EXPECT_TRUE(model::validate_tensor_parallel(c, 2).ok());
  EXPECT_EQ(model::validate_tensor_parallel(c, 3).message(),
            "parallel.tp: 3 does not divide model.n_heads 4");
  c.n_kv_heads = 1;
  EXPECT_EQ(model::validate_tensor_parallel(c, 2).message(),
            "parallel.tp: 2 does not divide model.n_kv_heads 1");
  c.n_kv_heads = 2;
  c.d_ff = 25;
  EXPECT_EQ(model::validate_tensor_parallel(c, 2).message(),
            "parallel.tp: 2 does not divide model.d_ff 25");
  c.d_ff = 24;
  c.vocab_size = 60;  // padded to 64: with 2 ranks of 32 rows, both hold real tokens
  EXPECT_TRUE(model::validate_tensor_parallel(c, 2).ok());
  c.vocab_size = 30;  // the second rank's 32 rows would all be padding
  EXPECT_NE(model::validate_tensor_parallel(c, 2).message().find("padding only"),
            std::string::npos);
}

// A group of one is the model without tensor parallelism: the same parameters and the same loss,
// bit for bit.
TEST(TensorParallelConfig, AGroupOfOneIsTheWholeModel) {
  auto single = make_single_process_communicator("tp");
  TensorParallelGroup one(*single);
  const model::ModelConfig c = small_config("TD");
  model::DtrnModel a(c, model::RoutingConfig{}, Device::cpu(), DType::kF32);
  model::DtrnModel b(c, model::RoutingConfig{}, Device::cpu(), DType::kF32, &one);
  a.init(1);
  b.init(1);
  EXPECT_EQ(b.tensor_parallel(), nullptr);
  const Tensor ids = Tensor::from_ints({1, 2, 3, 4, 5, 6}, {1, 6}, DType::kI64);
  const double la = a.forward(ids, ids, {}).loss.item(), lb = b.forward(ids, ids, {}).loss.item();
  EXPECT_EQ(la, lb);
  for (const auto& p : b.parameters()) EXPECT_EQ(p.tp.dim, -1) << p.name;
}

TEST(Mpirun, TensorParallelModelPassesOnTwoRanks) {
  if (std::string(DTRN_MPIEXEC).empty()) GTEST_SKIP() << "mpirun not found at configure time";
  if (read_launch_env()->world_size > 1) GTEST_SKIP() << "already a rank";
  char self[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", self, sizeof self - 1), 0);
  const std::string log = "/tmp/dtrn-tp-model-" + std::to_string(getpid()) + ".log";
  const std::string cmd =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
      std::string(DTRN_MPIEXEC) + " -np 2 --oversubscribe " + self +
      " --gtest_filter='TensorParallelModel.*' > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), 0) << "see " << log;
}

}  // namespace
}  // namespace dtrn::parallel
