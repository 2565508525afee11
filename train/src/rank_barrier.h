// RankBarrier: the CommitBarrier of a multi-rank job, over the parallel Communicator of all ranks, for a
// commit that runs on the background writer thread (async_checkpoint.h). Its rounds also tell the
// training threads when every rank's writer has finished, which a job whose commit runs through the
// coordinator (CoordinatorBarrier) uses too: its writers never call this barrier, so a round then only
// agrees on "finished".
//
// Note [Barrier rounds]
// A Communicator is driven by one thread, the training thread (MPI is initialised FUNNELED; NCCL's
// ordering is per stream), so the writer thread cannot issue collectives itself. Its broadcast() and
// gather() post the call and wait; the training thread carries calls out in round(), which every rank
// calls at the same points (step boundaries while a save is in flight), so the collectives of a round
// match across ranks: one all-reduce tells whether every rank's writer is waiting in the same call (then
// the call's broadcast or all-gather runs) and whether every rank's writer has finished. The writer's
// calls come in the same order on every rank (the commit protocol), so "every rank waits" means "in the
// same call". A round costs one small all-reduce; a save commits a few steps after its shards are written.
//
// Thread-safety: prepare()/report()/finish() from one writer thread, round() and abandon() from the
// training thread.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "dtrn/train/commit_barrier.h"
#include "dtrn/parallel/communicator.h"

namespace dtrn::train {

class RankBarrier final : public CommitBarrier {
 public:
  explicit RankBarrier(parallel::Communicator& comm) : comm_(comm) {}

  int64_t rank() const override { return comm_.rank(); }
  int64_t world() const override { return comm_.size(); }
  Vote prepare(int64_t step, const Vote& rank0) override { return broadcast(rank0); }
  std::vector<Vote> report(int64_t step, const Vote& mine) override;
  Vote finish(int64_t step, const Vote& rank0) override { return broadcast(rank0); }

  // Training thread, collective over the communicator: carries out the call every rank's writer waits in,
  // if they all do. `finished`: this rank's writer has finished. Returns whether every rank's has.
  bool round(bool finished);
  // Training thread, when it stops serving rounds with a save in flight (an error ended the run): the
  // writer's waiting and later calls throw dtrn::Error, so its commit ends without a manifest and the
  // writer can be joined. The save's files are leftovers for the next start to clean.
  void abandon() override;

 private:
  enum Call : int { kNone = 0, kBroadcast = 1, kGather = 2 };
  Vote broadcast(const Vote& value);
  std::vector<std::string> post(Call call, const std::string& value);

  parallel::Communicator& comm_;
  std::mutex mu_;
  std::condition_variable cv_;
  Call call_ = kNone;                // the call the writer waits in
  std::string value_;                // its argument
  std::vector<std::string> result_;  // its result, once carried out
  bool done_ = false;
  bool abandoned_ = false;
};

}  // namespace dtrn::train
