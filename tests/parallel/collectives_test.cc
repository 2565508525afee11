// The communicators and what is built on them, run as ranks of a real job: `Mpirun.*` starts this binary
// under `mpirun --oversubscribe` with 2 and 4 ranks and a filter for `Collectives.*`, which skip when the
// process was not launched as a rank. On CPU the collectives are Open MPI's; where GPUs and NCCL are
// present (the GPU machine: `mpirun -np 2 parallel_tests --gtest_filter='Collectives.*'` with
// NCCL_NVLS_ENABLE=0) the same checks also run on CUDA tensors through NCCL.
//
// Expected values are computed independently of the collectives from each rank's known inputs (rank r
// contributes values that are functions of r), so every check could fail. Sums of small integers are exact
// in f32; averages divide by powers of two where they must be exact.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <map>

#include "dtrn/parallel/grad_buckets.h"
#include "dtrn/parallel/mpi_communicator.h"
#include "dtrn/parallel/nccl_communicator.h"
#include "dtrn/parallel/process_groups.h"
#include "dtrn/parallel/tensor_parallel.h"
#include "dtrn/parallel/zero_optimizer.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/optim.h"

namespace dtrn::parallel {
namespace {

// The job's groups on `device`, joined once per process and device: 2 ranks are dp 2 x tp 1, 4 ranks
// dp 2 x tp 2 (TP innermost).
ProcessGroups* groups_on(Device device) {
  static std::map<std::string, std::unique_ptr<ProcessGroups>> joined;
  auto launch = read_launch_env();
  if (!launch.ok() || launch->world_size < 2) return nullptr;
  if (device.is_cuda() && (!nccl_compiled() || !cuda_available())) return nullptr;
  auto& slot = joined[device.str()];
  if (!slot) {
    ParallelOptions o;
    o.tp = launch->world_size >= 4 ? 2 : 1;
    o.dp = launch->world_size / o.tp;
    o.device = device.is_cuda() ? Device::cuda(launch->local_rank % cuda_device_count()) : device;
    o.timeout_s = 60;
    auto g = ProcessGroups::Join(o);
    EXPECT_TRUE(g.ok()) << g.status().message();
    if (!g.ok()) return nullptr;
    slot = std::move(*g);
  }
  return slot.get();
}

Device device_of(ProcessGroups* g, Device wanted) {
  return wanted.is_cuda() ? Device::cuda(g->launch().local_rank % cuda_device_count()) : Device::cpu();
}

Tensor mlp_reference(const Tensor& x, const Tensor& gate, const Tensor& up, const Tensor& down) {
  return linear(swiglu(linear(x, gate), linear(x, up)), down);
}

void expect_close(const Tensor& a, const Tensor& b, double tol) {
  ASSERT_EQ(a.shape(), b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(va[i], vb[i], tol * (1 + std::abs(vb[i]))) << "[" << i << "]";
}

class Collectives : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    groups_ = groups_on(GetParam());
    if (groups_ == nullptr) GTEST_SKIP() << "not a rank of a job on " << GetParam().str();
    device_ = device_of(groups_, GetParam());
  }
  Tensor on_device(const std::vector<double>& v) const {
    return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::kF32, device_);
  }
  ProcessGroups* groups_ = nullptr;
  Device device_;
};

TEST_P(Collectives, GroupsFollowTheGridWithTensorParallelismInnermost) {
  const int r = groups_->rank(), tp = groups_->tp_size();
  EXPECT_EQ(groups_->tp_rank(), r % tp);
  EXPECT_EQ(groups_->dp_rank(), r / tp);
  EXPECT_EQ(groups_->dp_size() * tp, groups_->world().size());
  // The TP group's members are consecutive world ranks: their sum tells which.
  Tensor t = on_device({static_cast<double>(r)});
  groups_->tp().all_reduce(t, ReduceOp::kSum);
  const int first = r / tp * tp;
  EXPECT_EQ(t.to_vector()[0], tp * first + tp * (tp - 1) / 2);
}

TEST_P(Collectives, AllReduceSumAvgMaxMin) {
  Communicator& w = groups_->world();
  const int n = w.size(), r = w.rank();
  auto run = [&](ReduceOp op) {
    Tensor t = on_device({static_cast<double>(r + 1), -static_cast<double>(r), 3.0});
    w.all_reduce(t, op);
    return t.to_vector();
  };
  EXPECT_EQ(run(ReduceOp::kSum), (std::vector<double>{n * (n + 1) / 2.0, -n * (n - 1) / 2.0, 3.0 * n}));
  EXPECT_EQ(run(ReduceOp::kAvg), (std::vector<double>{(n + 1) / 2.0, -(n - 1) / 2.0, 3.0}));
  EXPECT_EQ(run(ReduceOp::kMax), (std::vector<double>{static_cast<double>(n), 0, 3}));
  EXPECT_EQ(run(ReduceOp::kMin), (std::vector<double>{1, -static_cast<double>(n - 1), 3}));
}

TEST_P(Collectives, ReduceScatterAllGatherBroadcast) {
  Communicator& w = groups_->world();
  const int n = w.size(), r = w.rank();
  // in[i] = 10 r + i over n pieces of 2: piece p of the sum is sum_r (10 r + 2p + j).
  std::vector<double> in;
  for (int i = 0; i < 2 * n; ++i) in.push_back(10.0 * r + i);
  Tensor out = on_device({0, 0});
  w.reduce_scatter(on_device(in), out, ReduceOp::kSum);
  const double ranks_sum = 10.0 * n * (n - 1) / 2;
  EXPECT_EQ(out.to_vector(), (std::vector<double>{ranks_sum + n * (2.0 * r), ranks_sum + n * (2.0 * r + 1)}));

  Tensor gathered = on_device(std::vector<double>(2 * n, -1));
  w.all_gather(on_device({static_cast<double>(r), 100.0 + r}), gathered);
  std::vector<double> want;
  for (int p = 0; p < n; ++p) want.insert(want.end(), {static_cast<double>(p), 100.0 + p});
  EXPECT_EQ(gathered.to_vector(), want);

  Tensor b = on_device({static_cast<double>(r), 7});
  w.broadcast(b, n - 1);
  EXPECT_EQ(b.to_vector(), (std::vector<double>{static_cast<double>(n - 1), 7}));
}

TEST_P(Collectives, BroadcastStringCarriesAnyBytes) {
  if (device_.is_cuda()) GTEST_SKIP() << "broadcast_string is a CPU (MPI) helper";
  std::string s = groups_->rank() == 0 ? std::string("runs/\x01\xff job", 11) : "ignored";
  broadcast_string(groups_->world(), &s, 0);
  EXPECT_EQ(s, std::string("runs/\x01\xff job", 11));
}

// A toy model of three leaves of different sizes; rank r's loss is sum((r + 1) * w * x) for fixed x, so
// its gradient is (r + 1) * x and the DP average is mean_r(r + 1) * x = (n + 1) / 2 * x.
struct Toy {
  std::vector<Tensor> leaves;
  std::vector<std::pair<std::string, Tensor>> named;
  Toy(Device device) {
    const std::vector<int64_t> sizes = {5, 17, 3};
    for (size_t i = 0; i < sizes.size(); ++i) {
      Tensor w = Tensor::full({sizes[i]}, 0.5, DType::kF32, device);
      w.set_requires_grad(true);
      leaves.push_back(w);
      named.emplace_back("w" + std::to_string(i), w);
    }
  }
  static std::vector<double> x(int64_t n, size_t leaf) {
    std::vector<double> v;
    for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<double>(leaf * 100 + i) / 64.0);
    return v;
  }
  Tensor loss(int rank) const {
    Tensor total;
    for (size_t i = 0; i < leaves.size(); ++i) {
      Tensor xi = Tensor::from_vector(x(leaves[i].numel(), i), leaves[i].shape(), DType::kF32, leaves[i].device());
      Tensor term = sum(scale(mul(leaves[i], xi), rank + 1.0));
      total = total.defined() ? add(total, term) : term;
    }
    return total;
  }
};

TEST_P(Collectives, BucketsAverageGradientsOverTheDpGroupDuringBackward) {
  Communicator& dp = groups_->dp();
  const double mean = (dp.size() + 1) / 2.0;
  // 40 bytes per bucket: each leaf starts its own bucket, so several collectives are in flight.
  for (int64_t bucket_bytes : {int64_t{40}, int64_t{1} << 20}) {
    Toy toy(device_);
    GradientBuckets buckets(toy.named, dp, {bucket_bytes, false});
    // Two micro-batches: the first accumulates locally, the armed second one averages.
    toy.loss(dp.rank()).backward();
    buckets.arm();
    toy.loss(dp.rank()).backward();
    buckets.finish();
    for (size_t i = 0; i < toy.leaves.size(); ++i) {
      const auto g = toy.leaves[i].grad().to_vector();
      const auto x = Toy::x(toy.leaves[i].numel(), i);
      for (size_t j = 0; j < g.size(); ++j) EXPECT_FLOAT_EQ(g[j], 2 * mean * x[j]) << "leaf " << i << " [" << j << "]";
    }
  }
}

TEST_P(Collectives, ZeroOneUpdatesEqualAdamWOnTheAveragedGradients) {
  Communicator& dp = groups_->dp();
  Toy sharded(device_), reference(device_);
  // 48-byte buckets: the first holds w2 (3 elements) and w1 (17, from element 64: gradients start on 256-byte
  // boundaries), the second w0; the shards of 41 or 42 elements (dp 2) cut through w1.
  GradientBuckets buckets(sharded.named, dp, {48, true});
  std::vector<ParamGroupEntry> zs, refs;
  for (size_t i = 0; i < sharded.leaves.size(); ++i) {
    zs.push_back({sharded.named[i].first, sharded.leaves[i], i != 1, Tensor()});
    refs.push_back({reference.named[i].first, reference.leaves[i], i != 1, Tensor()});
  }
  const AdamWOptions options{0.9, 0.999, 1e-8, 0.1};
  ZeroAdamW zero(zs, buckets, options);
  AdamW plain(refs, options);
  for (int step = 0; step < 3; ++step) {
    buckets.arm();
    sharded.loss(dp.rank()).backward();
    buckets.finish();
    const double zero_norm = std::sqrt(zero.clip_and_step(1e-2, 1.0).to_vector()[0]);
    zero.zero_grad();
    // The reference sees the averaged gradient directly: mean_r(r + 1) = (n + 1) / 2 times rank 0's.
    reference.loss(0).backward();
    for (Tensor& l : reference.leaves) l.grad().copy_(scale(l.grad(), (dp.size() + 1) / 2.0));
    const double plain_norm = std::sqrt(plain.clip_and_step(1e-2, 1.0).to_vector()[0]);
    plain.zero_grad();
    EXPECT_NEAR(zero_norm, plain_norm, 1e-5 * plain_norm);
    for (size_t i = 0; i < sharded.leaves.size(); ++i) {
      const auto a = sharded.leaves[i].to_vector(), b = reference.leaves[i].to_vector();
      for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], 1e-6) << "step " << step << " leaf " << i;
    }
  }
  // This rank's pieces of the moments are the full optimizer's elements at the places they name, and
  // the pieces of all ranks cover every element once (the sum of their lengths).
  EXPECT_EQ(zero.step_count(), 3);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < refs.size(); ++i) index[refs[i].name] = i;
  double mine = 0;
  for (const auto& piece : zero.state_pieces()) {
    const size_t i = index.at(piece.param);
    const auto a = piece.exp_avg_sq.to_vector(), b = plain.exp_avg_sq()[i].to_vector();
    for (size_t j = 0; j < a.size(); ++j) {
      const double want = b[piece.begin + j];
      EXPECT_NEAR(a[j], want, 1e-6 * std::abs(want) + 1e-12) << piece.param << " element " << piece.begin + j;
    }
    mine += static_cast<double>(a.size());
  }
  Tensor covered = Tensor::full({1}, mine, DType::kF64, device_);
  dp.all_reduce(covered, ReduceOp::kSum);
  int64_t total = 0;
  for (const auto& r : refs) total += r.param.numel();
  EXPECT_EQ(covered.to_vector()[0], static_cast<double>(total));
}

TEST_P(Collectives, GroupsOfAGivenWorld) {
  // The coordinator's rendezvous hands over a world of its own: FromWorld builds the grid on it.
  if (device_.is_cuda() || groups_->launch().launcher != Launcher::kMpirun) GTEST_SKIP() << "built on the MPI world";
  const int n = groups_->world().size(), r = groups_->rank();
  auto g = ProcessGroups::FromWorld(make_mpi_world(std::make_shared<Liveness>(r, 60)), 1, n);
  ASSERT_TRUE(g.ok()) << g.status().message();
  EXPECT_EQ((*g)->tp_size(), n);
  EXPECT_EQ((*g)->dp_size(), 1);
  EXPECT_EQ((*g)->tp_rank(), r);
  Tensor t = on_device({1.0});
  (*g)->tp().all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(t.to_vector()[0], n);
}

// Megatron's MLP over the world as the TP group against the same MLP unsharded in this process: output,
// and the gradients of the input and of every weight shard (the matching rows / columns of the full
// gradients). f64 on the CPU (agreement to 1e-12: only the order of the partial sums differs); f32 on GPUs
// (1e-5 relative to values of order 1).
TEST_P(Collectives, TensorParallelMlpMatchesTheUnshardedOne) {
  Communicator& tp = groups_->world();
  const int64_t n = tp.size(), r = tp.rank(), rows = 5, c = 8, f = 12, fs = f / n;
  const DType dtype = device_.is_cuda() ? DType::kF32 : DType::kF64;
  const double tol = device_.is_cuda() ? 1e-5 : 1e-12;
  auto fixed = [&](const Shape& shape, uint64_t stream) {
    Tensor t = Tensor::normal(shape, 0.0, 0.5, 7, stream, 0, dtype, device_);
    t.set_requires_grad(true);
    return t;
  };
  auto leaf = [](const Tensor& t) {
    Tensor l = t.detach().contiguous().clone();
    l.set_requires_grad(true);
    return l;
  };
  Tensor x = fixed({rows, c}, 1), gate = fixed({f, c}, 2), up = fixed({f, c}, 3), down = fixed({c, f}, 4);
  Tensor weights = Tensor::normal({rows, c}, 0.0, 1.0, 7, 5, 0, dtype, device_);
  Tensor y_ref = mlp_reference(x, gate, up, down);
  sum(mul(y_ref, weights)).backward();

  Tensor xs = leaf(x), gate_r = leaf(gate.narrow(0, r * fs, fs)), up_r = leaf(up.narrow(0, r * fs, fs));
  Tensor down_r = leaf(down.narrow(1, r * fs, fs));
  Tensor y = row_parallel_linear(swiglu(column_parallel_linear(xs, gate_r, tp), column_parallel_linear(xs, up_r, tp)),
                                 down_r, tp);
  sum(mul(y, weights)).backward();
  expect_close(y, y_ref, tol);
  expect_close(xs.grad(), x.grad(), tol);
  expect_close(gate_r.grad(), gate.grad().narrow(0, r * fs, fs), tol);
  expect_close(up_r.grad(), up.grad().narrow(0, r * fs, fs), tol);
  expect_close(down_r.grad(), down.grad().narrow(1, r * fs, fs), tol);

  // The gathered form: every rank holds the whole x gate^T, and the input's gradient is whole again.
  Tensor xg = leaf(x), gate_g = leaf(gate.narrow(0, r * fs, fs));
  Tensor full = column_parallel_linear(xg, gate_g, tp, /*gather_output=*/true);
  Tensor x_ref = leaf(x);
  Tensor full_ref = linear(x_ref, gate.detach());
  expect_close(full, full_ref, tol);
  sum(mul(full, full_ref.detach())).backward();
  sum(mul(full_ref, full_ref.detach())).backward();
  expect_close(xg.grad(), x_ref.grad(), tol);
}

INSTANTIATE_TEST_SUITE_P(Devices, Collectives, ::testing::Values(Device::cpu(), Device::cuda(0)),
                         [](const auto& info) { return info.param.is_cpu() ? std::string("cpu") : std::string("cuda"); });

// Runs this binary's Collectives (and the TCP communicator's comparison with MPI, tcp_communicator_test.cc)
// under mpirun with np ranks; the exit status is every rank's verdict.
int run_under_mpirun(int np) {
  char self[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return -1;
  const std::string cmd = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 " +
                          std::string(DTRN_MPIEXEC) + " -np " + std::to_string(np) + " --oversubscribe " + self +
                          " --gtest_filter='Devices/Collectives.*:TcpAgainstMpi.*' > /tmp/dtrn-collectives-" + std::to_string(np) +
                          "-" + std::to_string(getpid()) + ".log 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(ProcessGroups, AGridThatDoesNotCoverTheWorldIsRefusedNamingBoth) {
  auto g = ProcessGroups::FromWorld(make_single_process_communicator(), 2, 1);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("parallel.dp x parallel.tp = 2 x 1"), std::string::npos)
      << g.status().message();
  EXPECT_NE(g.status().message().find("world of 1 ranks"), std::string::npos) << g.status().message();
  auto one = ProcessGroups::FromWorld(make_single_process_communicator(), 1, 1);
  ASSERT_TRUE(one.ok());
  Tensor t = Tensor::from_vector({3, 4}, {2});
  (*one)->dp().all_reduce(t, ReduceOp::kAvg);
  EXPECT_EQ(t.to_vector(), (std::vector<double>{3, 4}));
}

TEST(Mpirun, CollectivesPassOnTwoAndFourRanks) {
  if (std::string(DTRN_MPIEXEC).empty()) GTEST_SKIP() << "mpirun not found at configure time";
  if (read_launch_env()->world_size > 1) GTEST_SKIP() << "already a rank";
  for (int np : {2, 4}) {
    EXPECT_EQ(run_under_mpirun(np), 0) << "mpirun -np " << np << ": see /tmp/dtrn-collectives-" << np << "-"
                                       << getpid() << ".log";
  }
}

}  // namespace
}  // namespace dtrn::parallel
