// The training loop (`dtrn train`), alone or as one rank of a data-parallel job: data loader, gradient
// accumulation to the global batch, gradient averaging over DP ranks (parallel/), the DTRNet loss, AdamW
// (or ZeRO-1) with warm-up + cosine and clipping, periodic validation, starvation detection, checkpoints,
// and the run directory, which rank 0 alone writes:
//   RUN/config.yaml       the resolved job config
//   RUN/train.log         everything printed on stdout
//   RUN/metrics.jsonl     one JSON object per line: "kind": "train" per step, "kind": "val" per evaluation
//   RUN/checkpoints/      step-NNNNNNNN/ (checkpoint.h)
//   RUN/.lock             held (flock) while a trainer runs in RUN; its text is that trainer's pid
// Same config and seed on the same build and machine give byte-identical metrics.jsonl apart from the
// timing fields (tokens_per_s, step_ms); a resumed run appends exactly the lines an uninterrupted run
// would have written.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dtrn/parallel/process_groups.h"
#include "dtrn/runtime/status.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/job_config.h"
#include "dtrn/train/telemetry.h"

namespace dtrn::train {

struct TrainRunOptions {
  std::string run_dir;    // empty: runs/<YYYYmmdd-HHMMSS>
  bool resume = false;    // continue from the run directory's newest checkpoint
  std::string init_from;  // a safetensors file (dtrn export output or a dense Llama) to start from
  bool quiet = false;     // no per-step line on stdout (tests)
  TelemetrySink* telemetry = nullptr;  // not owned; null: the run reports to its run directory only
  // Not owned: how the ranks agree on each checkpoint (the coordinator's, when it runs the job); its
  // rank and world must be this process's. Null: over the ranks' communicator (one process: locally).
  CommitBarrier* commit_barrier = nullptr;
};

// Tracks each D layer's starvation (f < threshold for `window` consecutive steps, or the fallback fired)
// and saturation (f > 0.9 for `window` consecutive steps), per dtrnet-spec.md.
class StarvationMonitor {
 public:
  StarvationMonitor(double threshold, int64_t window) : threshold_(threshold), window_(window) {}
  struct Verdict {
    bool starved = false;
    bool saturated = false;
  };
  Verdict observe(int64_t layer, double f, bool fallback);
  // The runs so far, saved in checkpoints so that a resumed run flags exactly what the uninterrupted one
  // would; restore() replaces them.
  std::vector<MonitorRun> runs() const;
  void restore(const std::vector<MonitorRun>& runs);
  // The run of consecutive low / high steps per layer, for checkpoints.
  struct Runs {
    int64_t low = 0, high = 0;
  };

 private:
  double threshold_;
  int64_t window_;
  std::vector<std::pair<int64_t, Runs>> runs_;
};

// The exit status of `dtrn train` stopped by SIGTERM or SIGINT after saving its checkpoint (75,
// EX_TEMPFAIL: "try again later"; Note [Pre-emption] in src/stop_signals.h).
inline constexpr int kExitStopped = 75;

// One rank's training job as an object with explicit steps, so that `dtrn train` (alone or under mpirun
// and srun), the launcher, the coordinator's workers and tests all drive the same thing. Open() does every
// check and the set-up; then either run() (the whole loop at the config's cadence), or the caller's own
// loop of train_step(), validate() and save(). Every method except run_dir()/step()/finished() is a
// collective over the job's ranks when there are several: all ranks call the same methods in the same
// order. Not thread-safe.
class Trainer {
 public:
  // Opens the run (rank 0 takes the run directory; the others learn its path), checks a resume, and
  // builds data, model and optimizer. Refuses, before writing anything (see src/run_directory.h and
  // src/resume_policy.h): a fresh run into a folder that is not empty, a folder another trainer holds,
  // --resume with init_from, and a resume whose config changes what the checkpoint means. A rank whose
  // set-up fails returns its error; the others return "another rank failed ...". `groups` must outlive
  // the Trainer.
  static StatusOr<std::unique_ptr<Trainer>> Open(const JobConfig& config, const TrainRunOptions& options,
                                                 parallel::ProcessGroups& groups);
  ~Trainer();

  // One optimizer step over the global batch: the line in metrics.jsonl and on stdout (rank 0), and the
  // step's figures over all ranks.
  StatusOr<StepStats> train_step();
  // Validation on the val split (rank 0; a no-op returning Ok on the others).
  Status validate();
  // A checkpoint of the current step (rank 0 writes it; ZeRO-1 gathers the optimizer state first).
  Status save();
  // The loop: steps until train.steps, validation and checkpoints at their cadence, a stop request from
  // the telemetry sink, or a signal (stop_signal() returns it, 0 for none; the ranks agree after each step)
  // which saves a checkpoint and returns kCancelled naming it.
  StatusOr<std::string> run(const std::function<int()>& stop_signal);

  const std::string& run_dir() const;
  int64_t step() const;  // steps completed
  bool finished() const;

 private:
  struct State;
  explicit Trainer(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Runs the job in this process; returns the run directory on success (also when a resumed run had nothing left to do).
// Joins the job this process was launched into (parallel/process_groups.h), opens a Trainer and runs it.
// SIGTERM / SIGINT during the run: the step finishes, a checkpoint is saved, and the result is a
// kCancelled Status naming it. Errors after the run started are also appended to RUN/train.log.
StatusOr<std::string> run_training(const JobConfig& config, const TrainRunOptions& options);

}  // namespace dtrn::train
