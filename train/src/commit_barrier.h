// How the ranks of one save agree (the two-phase commit in checkpoint_commit.h): rank 0 hands every
// rank the save's id, and collects every rank's report before it commits. RankBarrier (rank_barrier.h)
// implements it on the parallel Communicator of a multi-rank job (a broadcast and a gather of bytes);
// the coordinator may implement it through its job state. LocalBarrier is the one-process case.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrn::train {

class CommitBarrier {
 public:
  virtual ~CommitBarrier() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world() const = 0;
  // Collective: every rank calls it; all return rank 0's `value`. No rank returns before rank 0 called.
  virtual std::string broadcast(const std::string& value) = 0;
  // Collective: rank 0 returns every rank's `mine`, in rank order; the others return an empty vector.
  virtual std::vector<std::string> gather(const std::string& mine) = 0;
};

class LocalBarrier final : public CommitBarrier {
 public:
  int64_t rank() const override { return 0; }
  int64_t world() const override { return 1; }
  std::string broadcast(const std::string& value) override { return value; }
  std::vector<std::string> gather(const std::string& mine) override { return {mine}; }
};

}  // namespace dtrn::train
