// How the ranks of one save agree (the two-phase commit, Note [Commit protocol] in
// train/src/checkpoint_commit.h). Every rank calls prepare(), report() and finish(), in that order,
// for each save: rank 0 hands every rank the save's id, collects every rank's shard report before
// it commits, and tells every rank the outcome. Implementations:
//   LocalBarrier: one process.
//   RankBarrier: a multi-rank job, over the parallel Communicator (train/src/rank_barrier.h).
//   CoordinatorBarrier: a job the coordinator runs, through its ReportShard RPC
//     (dtrn/coordinator/coordinator_barrier.h); the coordinator records every save's reports.
// Public because the coordinator implements it; train::TrainRunOptions::commit_barrier injects one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrn::train {

// One rank's word in one phase of a save: when ok, what it passes on (the save id, its shard's
// entry); otherwise why it failed, one line.
struct Vote {
  bool ok = false;
  std::string text;
};

class CommitBarrier {
 public:
  virtual ~CommitBarrier() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world() const = 0;
  // Rank 0 prepared the folder of the save of `step` (ok: text is the new save id); every rank
  // returns rank 0's vote (the others' `rank0` is ignored). No rank returns before rank 0 called.
  virtual Vote prepare(int64_t step, const Vote& rank0) = 0;
  // Every rank's shard vote (ok: text is its shard's entry). Rank 0 returns all of them, in rank
  // order, once every rank voted; the others return an empty vector.
  virtual std::vector<Vote> report(int64_t step, const Vote& mine) = 0;
  // Rank 0's outcome of phase 2 (ok: the checkpoint is committed); every rank returns it.
  virtual Vote finish(int64_t step, const Vote& rank0) = 0;
  // From another thread, when the run ends with a save in progress: the calls waiting and any later
  // ones throw dtrn::Error, so the commit ends without a manifest. Idempotent.
  virtual void abandon() {}
};

class LocalBarrier final : public CommitBarrier {
 public:
  int64_t rank() const override { return 0; }
  int64_t world() const override { return 1; }
  Vote prepare(int64_t, const Vote& rank0) override { return rank0; }
  std::vector<Vote> report(int64_t, const Vote& mine) override { return {mine}; }
  Vote finish(int64_t, const Vote& rank0) override { return rank0; }
};

}  // namespace dtrn::train
