// The TCP communicator (CPU ranks started by RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, no mpirun):
//   - ranks as threads of this process: every collective against values computed from the ranks'
//   known
//     inputs, over chunks that do not divide evenly, and a split's groups;
//   - TorchrunStyle.*: this binary started as 2 and 4 processes with torchrun's variables runs the
//   whole
//     Devices/Collectives.*/cpu suite of collectives_test.cc on the TCP world, and a rank killed
//     with SIGKILL is named by the other within seconds (exit status 69);
//   - TcpAgainstMpi.*: under mpirun (collectives_test.cc's Mpirun.* starts it with 2 and 4 ranks),
//   the
//     same random f32 inputs through Open MPI and through TCP: with 2 ranks bit for bit (float
//     addition commutes, so a + b is the only sum), with 4 within 1e-6 relative (the ring orders
//     the partial sums differently from Open MPI; f32's epsilon is 1.2e-7 and each element adds
//     four values of order 1).
#include "dtrn/parallel/tcp_communicator.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "dtrn/parallel/launch_env.h"
#include "dtrn/parallel/mpi_communicator.h"
#include "dtrn/parallel/process_groups.h"
#include "free_port.h"

namespace dtrn::parallel {
namespace {

// Runs fn(rank, world) on `n` threads, each a rank of one TCP world over one store on loopback.
void with_thread_ranks(int n, const std::function<void(int, Communicator&)>& fn) {
  auto server = TcpStore::Open(0, n, "127.0.0.1", 0, 20);
  ASSERT_TRUE(server.ok()) << server.status().message();
  const int port = (*server)->port();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(n);
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      std::unique_ptr<TcpStore> own;
      TcpStore* store = server->get();
      if (r != 0) {
        auto s = TcpStore::Open(r, n, "127.0.0.1", port, 20);
        if (!s.ok()) {
          errors[r] = s.status().message();
          return;
        }
        own = std::move(*s);
        store = own.get();
      }
      auto world = make_tcp_world(*store, r, n, "127.0.0.1", std::make_shared<Liveness>(r, 60), 20);
      if (!world.ok()) {
        errors[r] = world.status().message();
        return;
      }
      fn(r, **world);
      (*world)->barrier();  // no rank closes its connections while another still reads from them
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

TEST(TcpCommunicator, CollectivesOfThreeRanksGiveTheValuesOfTheirInputs) {
  const int n = 3;
  std::vector<std::vector<double>> reduced(n), scattered(n), gathered(n), broadcast(n),
      group_sums(n);
  with_thread_ranks(n, [&](int r, Communicator& w) {
    // 7 elements over 3 ranks: chunks of 2, 2 and 3. Element i of rank r is 10 r + i (exact in
    // f32).
    std::vector<double> mine;
    for (int i = 0; i < 7; ++i) mine.push_back(10.0 * r + i);
    Tensor t = Tensor::from_vector(mine, {7});
    w.all_reduce(t, ReduceOp::kSum);
    reduced[r] = t.to_vector();
    Tensor out = Tensor::zeros({2});
    w.reduce_scatter(
        Tensor::from_vector({1.0 * r, 2.0 * r, 3.0 * r, 4.0 * r, 5.0 * r, 6.0 * r}, {6}), out,
        ReduceOp::kMax);
    scattered[r] = out.to_vector();
    Tensor all = Tensor::zeros({3 * 2}, DType::kI64);
    w.all_gather(Tensor::from_ints({r, -r}, {2}, DType::kI64), all);
    for (int64_t v : all.to_ints()) gathered[r].push_back(static_cast<double>(v));
    Tensor b = Tensor::from_vector({1.0 * r, 0.5}, {2}, DType::kF64);
    w.broadcast(b, 1);
    broadcast[r] = b.to_vector();
    // Ranks 0 and 2 form one group, rank 1 another; keys reverse the order inside a group.
    auto sub = w.split(r % 2, -r, "pair");
    Tensor who =
        Tensor::from_vector({static_cast<double>(sub->rank()), static_cast<double>(r)}, {2});
    sub->all_reduce(who, ReduceOp::kSum);
    group_sums[r] = {static_cast<double>(sub->size()), who.to_vector()[0], who.to_vector()[1]};
  });
  for (int r = 0; r < n; ++r) {
    for (int i = 0; i < 7; ++i)
      EXPECT_EQ(reduced[r][i], 10.0 * (0 + 1 + 2) + 3 * i) << "rank " << r << " [" << i << "]";
    EXPECT_EQ(scattered[r], (std::vector<double>{2.0 * (2 * r + 1), 2.0 * (2 * r + 2)}))
        << "rank " << r;
    EXPECT_EQ(gathered[r], (std::vector<double>{0, 0, 1, -1, 2, -2})) << "rank " << r;
    EXPECT_EQ(broadcast[r], (std::vector<double>{1, 0.5})) << "rank " << r;
  }
  EXPECT_EQ(group_sums[0],
            (std::vector<double>{2, 1, 2}));  // group {2, 0}: group ranks 0 + 1, world 0 + 2
  EXPECT_EQ(group_sums[2], (std::vector<double>{2, 1, 2}));
  EXPECT_EQ(group_sums[1], (std::vector<double>{1, 0, 1}));
}

TEST(TcpCommunicator, AverageOfOneLargeBufferAndEmptyChunks) {
  // 2 elements over 3 ranks leave one chunk empty; 300000 f32 (1.2 MB) fill the sockets' buffers in
  // both directions at once, which a send that waited for its peer's receive would deadlock on.
  std::vector<std::vector<double>> small(3), large_first_last(3);
  with_thread_ranks(3, [&](int r, Communicator& w) {
    Tensor s = Tensor::from_vector({2.0 * r, 1.0}, {2});
    w.all_reduce(s, ReduceOp::kAvg);
    small[r] = s.to_vector();
    Tensor big = Tensor::full({300000}, r + 1.0);
    w.all_reduce(big, ReduceOp::kAvg);
    const auto v = big.to_vector();
    bool all_two = true;
    for (double x : v) all_two = all_two && x == 2.0;
    large_first_last[r] = {v.front(), v.back(), all_two ? 1.0 : 0.0};
  });
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(small[r], (std::vector<double>{2, 1}));
    EXPECT_EQ(large_first_last[r], (std::vector<double>{2, 2, 1}))
        << "rank " << r << ": every element the mean of 1, 2, 3";
  }
}

// ---- this binary as the ranks of a torchrun-style job
// ---------------------------------------------

using dtrn::testing::free_port;

struct RankResult {
  int status = -1;  // exit status, or 128 + signal
  std::string log;
};

// Starts this binary `np` times with RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (plus
// `extra`) and the gtest filter; waits for all and returns each rank's status and output.
std::vector<RankResult> run_env_launched(
    int np, const std::string& filter,
    const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return {};
  const int port = free_port();
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < np; ++r) {
    logs.push_back("/tmp/dtrn-tcp-rank-" + std::to_string(r) + "-" + std::to_string(getpid()) +
                   ".log");
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = std::fopen(logs.back().c_str(), "w");
      if (f) {
        dup2(fileno(f), 1);
        dup2(fileno(f), 2);
      }
      for (const auto& [k, v] :
           std::vector<std::pair<std::string, std::string>>{{"RANK", std::to_string(r)},
                                                            {"WORLD_SIZE", std::to_string(np)},
                                                            {"LOCAL_RANK", std::to_string(r)},
                                                            {"MASTER_ADDR", "127.0.0.1"},
                                                            {"MASTER_PORT", std::to_string(port)},
                                                            {"OMP_NUM_THREADS", "1"}}) {
        setenv(k.c_str(), v.c_str(), 1);
      }
      for (const auto& [k, v] : extra) setenv(k.c_str(), v.c_str(), 1);
      const std::string flag = "--gtest_filter=" + filter;
      execl(self, self, flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<RankResult> out(np);
  for (int r = 0; r < np; ++r) {
    int s = 0;
    waitpid(pids[r], &s, 0);
    out[r].status = WIFEXITED(s) ? WEXITSTATUS(s) : 128 + WTERMSIG(s);
    std::ifstream in(logs[r]);
    std::stringstream ss;
    ss << in.rdbuf();
    out[r].log = ss.str();
    std::remove(logs[r].c_str());
  }
  return out;
}

bool launched_as_rank() {
  auto env = read_launch_env();
  return env.ok() && env->world_size > 1;
}

TEST(TorchrunStyle, TheCollectivesSuitePassesOnTwoAndFourRanksWithoutMpi) {
  if (launched_as_rank()) GTEST_SKIP() << "already a rank";
  for (int np : {2, 4}) {
    const auto ranks = run_env_launched(np, "Devices/Collectives.*/cpu");
    for (int r = 0; r < np; ++r) {
      EXPECT_EQ(ranks[r].status, 0) << np << " ranks, rank " << r << ":\n" << ranks[r].log;
      // The suite really ran on the TCP world, not skipped.
      EXPECT_NE(ranks[r].log.find("[       OK ] Devices/Collectives.AllReduceSumAvgMaxMin/cpu"),
                std::string::npos)
          << ranks[r].log;
      EXPECT_EQ(ranks[r].log.find("not a rank of a job"), std::string::npos) << ranks[r].log;
    }
  }
}

// Run by KilledRankIsNamedByTheOther as both ranks: rank 1 dies by SIGKILL once the world is
// formed; rank 0 must not wait for it.
TEST(TcpLostRank, RankOneDies) {
  if (!launched_as_rank() || std::getenv("DTRN_TEST_KILL_RANK_1") == nullptr)
    GTEST_SKIP() << "a rank of KilledRankIsNamedByTheOther";
  ParallelOptions o;
  o.dp = 2;
  o.timeout_s = 60;
  auto groups = ProcessGroups::Join(o);
  ASSERT_TRUE(groups.ok()) << groups.status().message();
  (*groups)->world().barrier();
  if ((*groups)->rank() == 1) raise(SIGKILL);
  Tensor t = Tensor::full({1000}, 1.0);
  (*groups)->dp().all_reduce(t, ReduceOp::kSum);  // never completes: rank 1 is gone
  ADD_FAILURE() << "the all-reduce completed without rank 1";
}

TEST(TorchrunStyle, KilledRankIsNamedByTheOther) {
  if (launched_as_rank()) GTEST_SKIP() << "already a rank";
  const auto started = std::chrono::steady_clock::now();
  const auto ranks = run_env_launched(2, "TcpLostRank.*", {{"DTRN_TEST_KILL_RANK_1", "1"}});
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(ranks[1].status, 128 + SIGKILL);
  EXPECT_EQ(ranks[0].status, kExitLostRank) << ranks[0].log;
  EXPECT_NE(ranks[0].log.find("dtrn: rank 0: lost rank 1"), std::string::npos) << ranks[0].log;
  EXPECT_NE(ranks[0].log.find("all_reduce #"), std::string::npos) << ranks[0].log;
  EXPECT_LT(took, 20.0)
      << "far below parallel.timeout_s (60 s): the closed connection tells at once";
}

// ---- against Open MPI
// ------------------------------------------------------------------------------

void expect_agree(const Tensor& tcp, const Tensor& mpi, int n, const std::string& what) {
  const auto a = tcp.to_vector(), b = mpi.to_vector();
  ASSERT_EQ(a.size(), b.size()) << what;
  if (n == 2) {
    EXPECT_EQ(a, b) << what << ": with 2 ranks both compute a + b";
    return;
  }
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], 1e-6 * (1 + std::abs(b[i]))) << what << " [" << i << "]";
}

TEST(TcpAgainstMpi, EveryCollectiveAgreesWithOpenMpi) {
  auto env = read_launch_env();
  if (!env.ok() || env->launcher != Launcher::kMpirun || env->world_size < 2)
    GTEST_SKIP() << "runs under mpirun";
  const int r = env->rank, n = env->world_size;
  auto mpi = make_mpi_world(std::make_shared<Liveness>(r, 60));
  // A TCP world beside the MPI one: rank 0 serves a store whose port the MPI world shares.
  std::unique_ptr<TcpStore> store;
  std::string port = "0";
  if (r == 0) {
    auto s = TcpStore::Open(0, n, "127.0.0.1", 0, 30);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store = std::move(*s);
    port = std::to_string(store->port());
  }
  broadcast_string(*mpi, &port, 0);
  if (r != 0) {
    auto s = TcpStore::Open(r, n, "127.0.0.1", std::stoi(port), 30);
    ASSERT_TRUE(s.ok()) << s.status().message();
    store = std::move(*s);
  }
  auto tcp = make_tcp_world(*store, r, n, "127.0.0.1", std::make_shared<Liveness>(r, 60), 30);
  ASSERT_TRUE(tcp.ok()) << tcp.status().message();
  // 1001 values of order 1 per rank, different on every rank; 1001 is no multiple of 2 or 4.
  const Tensor input = Tensor::normal({1001}, 0.0, 1.0, 11, static_cast<uint64_t>(r) + 1);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
    Tensor a = input.clone(), b = input.clone();
    (*tcp)->all_reduce(a, op);
    mpi->all_reduce(b, op);
    expect_agree(a, b, n, std::string("all_reduce ") + reduce_op_name(op));
  }
  const Tensor pieces =
      Tensor::normal({250 * static_cast<int64_t>(n)}, 0.0, 1.0, 12, static_cast<uint64_t>(r) + 1);
  Tensor sa = Tensor::zeros({250}), sb = Tensor::zeros({250});
  (*tcp)->reduce_scatter(pieces, sa, ReduceOp::kSum);
  mpi->reduce_scatter(pieces, sb, ReduceOp::kSum);
  expect_agree(sa, sb, n, "reduce_scatter");
  Tensor ga = Tensor::zeros({250 * static_cast<int64_t>(n)}),
         gb = Tensor::zeros({250 * static_cast<int64_t>(n)});
  (*tcp)->all_gather(sa, ga);
  mpi->all_gather(sa, gb);
  EXPECT_EQ(ga.to_vector(), gb.to_vector()) << "all_gather copies";
  Tensor ba = input.clone(), bb = input.clone();
  (*tcp)->broadcast(ba, n - 1);
  mpi->broadcast(bb, n - 1);
  EXPECT_EQ(ba.to_vector(), bb.to_vector()) << "broadcast copies";
  // The same split on both: groups of even and odd ranks, ordered by descending rank.
  auto ta = (*tcp)->split(r % 2, -r, "parity"), tb = mpi->split(r % 2, -r, "parity");
  EXPECT_EQ(ta->rank(), tb->rank());
  EXPECT_EQ(ta->size(), tb->size());
  Tensor pa = input.clone(), pb = input.clone();
  ta->all_reduce(pa, ReduceOp::kSum);
  tb->all_reduce(pb, ReduceOp::kSum);
  expect_agree(pa, pb, ta->size(), "all_reduce on a split");
  mpi->barrier();
}

}  // namespace
}  // namespace dtrn::parallel
