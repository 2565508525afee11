// Saves during `dtrn bench` (bench.h, BenchOptions::checkpoint_every): the Trainer's save path
// (Trainer::save in trainer.cc: join the previous save, snapshot_checkpoint into host memory,
// AsyncCheckpointWriter::start) driven at the bench's step boundaries, with the wall time of every timed
// step classed by what the writer was doing. One process (no RankBarrier); one thread calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "async_checkpoint.h"
#include "dtrn/model/model.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/train/bench.h"
#include "dtrn/train/job_config.h"
#include "timing_env.h"

namespace dtrn::train {

class BenchSaves {
 public:
  using Clock = std::chrono::steady_clock;
  // Prepares the run folder: options.checkpoint_dir (created when missing; refused when it already holds
  // checkpoints/) or a fresh temporary folder.
  static StatusOr<std::unique_ptr<BenchSaves>> Open(const JobConfig& config, const BenchOptions& options);
  // Joins a save in flight (its result is lost: call finish()) and removes a temporary run folder.
  ~BenchSaves();
  BenchSaves(const BenchSaves&) = delete;
  BenchSaves& operator=(const BenchSaves&) = delete;

  // At the end of the `timed`-th timed step (`completed` optimizer steps in all), once the device has
  // finished it; the step began at `start`. Joins a save that has finished, and starts one when `timed`
  // is a multiple of checkpoint_every.
  Status step_done(int64_t completed, int64_t timed, Clock::time_point start, const model::DtrnModel& model,
                   AdamW& optimizer);
  // Joins the last save, measures the disk beside it (disk_bandwidth.h) and returns the whole account.
  StatusOr<BenchCheckpoints> finish();

 private:
  BenchSaves(const JobConfig& config, std::string run_dir, bool temporary);
  // A joined save's outcome completes its BenchSave.
  Status record(std::optional<AsyncCheckpointWriter::Done> done);

  JobConfig config_;
  std::string config_yaml_;
  TimingEnv env_{Env::posix()};  // the saves' file system, timed (declared before the writer that uses it)
  bool temporary_;
  BenchCheckpoints result_;
  std::vector<double> quiet_ms_, writing_ms_;
  bool writing_ = false;  // a save started and not yet joined
  std::unique_ptr<AsyncCheckpointWriter> writer_;
};

}  // namespace dtrn::train
