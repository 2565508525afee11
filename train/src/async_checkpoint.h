// Asynchronous saving: a snapshot (host copies of the state, taken at a step boundary) is written and
// committed by a background thread while training goes on. At most one save is in flight: start()
// first waits for the previous one. The time training waited and the time the write took are
// reported when a save is joined, so a caller can put them in metrics.jsonl.
//
// In a multi-rank job every rank has a writer, started at the same step; the commit runs through
// options.barrier: a RankBarrier that the training thread serves (Note [Barrier rounds] in
// rank_barrier.h), or the coordinator's, which the writer calls itself. Either way poll() and wait() are
// then collective over a RankBarrier's rounds: every rank calls them at the same points, and a save is
// joined on every rank at the same step, once every rank's writer has finished.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "dtrn/train/checkpoint.h"
#include "rank_barrier.h"

namespace dtrn::train {

class AsyncCheckpointWriter {
 public:
  // `ranks` (not owned; nullptr for one process) serves the rounds; options.barrier is `ranks` itself or
  // a barrier that needs no serving.
  AsyncCheckpointWriter(std::string run_dir, SaveOptions options, RankBarrier* ranks = nullptr)
      : run_dir_(std::move(run_dir)), options_(options), ranks_(ranks) {}
  // Joins a save in flight (its result is lost: call wait() first); a commit across ranks is abandoned
  // (CommitBarrier::abandon), so the save is not committed.
  ~AsyncCheckpointWriter();
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  struct Done {
    int64_t step = 0;
    StatusOr<std::string> dir = Status::Internal("not written");
    double write_ms = 0;  // in the background thread: write, commit, retention
  };
  // Starts writing `snapshot` (of `step`) in the background. There must be no save in flight.
  void start(std::shared_ptr<const CheckpointSnapshot> snapshot, int64_t step);
  // At a step boundary: serves the save's barrier and, once it has finished (on every rank), joins it and
  // returns its outcome; nullopt while it is in flight or when there is none.
  std::optional<Done> poll();
  // Joins the save in flight, if any (serving its barrier until then), and returns its outcome.
  std::optional<Done> wait();

 private:
  std::string run_dir_;
  SaveOptions options_;
  RankBarrier* ranks_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  Done done_;
};

}  // namespace dtrn::train
