// Asynchronous saving: a snapshot (host copies of the state, taken at a step boundary) is written and
// committed by a background thread while training goes on. At most one save is in flight: start()
// first waits for the previous one. The time training waited and the time the write took are
// reported when a save is joined, so a caller can put them in metrics.jsonl; finished() lets it join a
// save as soon as it is written, without waiting.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "dtrn/train/checkpoint.h"

namespace dtrn::train {

class AsyncCheckpointWriter {
 public:
  AsyncCheckpointWriter(std::string run_dir, SaveOptions options)
      : run_dir_(std::move(run_dir)), options_(options) {}
  ~AsyncCheckpointWriter();  // joins a save in flight (its result is lost: call wait() first)
  AsyncCheckpointWriter(const AsyncCheckpointWriter&) = delete;
  AsyncCheckpointWriter& operator=(const AsyncCheckpointWriter&) = delete;

  struct Done {
    int64_t step = 0;
    StatusOr<std::string> dir = Status::Internal("not written");
    double write_ms = 0;  // in the background thread: write, commit, retention
  };
  // Starts writing `snapshot` (of `step`) in the background. There must be no save in flight.
  void start(std::shared_ptr<const CheckpointSnapshot> snapshot, int64_t step);
  // Joins the save in flight, if any, and returns its outcome.
  std::optional<Done> wait();
  // A save was started and has finished writing (wait() then returns at once).
  bool finished() const { return thread_.joinable() && finished_.load(std::memory_order_acquire); }

 private:
  std::string run_dir_;
  SaveOptions options_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  Done done_;
};

}  // namespace dtrn::train
