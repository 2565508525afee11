// The worker loop's window to the outside: run_training() reports each step's statistics, its phase and
// its committed checkpoints to a TelemetrySink, and asks it whether to stop. train/ defines the interface
// and never sees who implements it (coordinator/'s worker client does; cli/ wires the two), so a job runs
// the same with or without a coordinator.
//
// Calls come from the training thread, between steps; an implementation must return quickly (queue and
// send elsewhere) and must not throw. The sink outlives run_training().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrn::train {

// One D layer in one step (dtrnet-spec.md, Per-layer statistics and Layer starvation).
struct LayerStepStats {
  int64_t layer = 0;
  double f = 0;  // routed fraction, averaged over micro-batches
  double s = 0;  // mean p_attn
  bool fallback = false;
  bool starved = false;
  bool saturated = false;
  double p10 = 0, p50 = 0, p90 = 0;  // quantiles of p_attn over the step's tokens (micro-batch means)
  double bias = 0;                   // the threshold bias b_l the step routed with (0: none)
  int64_t fallbacks = 0;             // micro-batches in which a fallback fired
  bool collapsed = false;            // the threshold alone routed none or all of some micro-batch
  double f_min = 0, f_max = 0;       // over the ranks the step combines (StepStats.ranks; f when 1)
};

struct StepStats {
  int64_t step = 0;  // steps completed
  double loss = 0;
  double tokens_per_s = 0;
  double step_ms = 0;
  std::vector<LayerStepStats> layers;
  int64_t ranks = 1;  // how many ranks' figures these are: a data-parallel job's rank 0 reports the job's
};

// A committed checkpoint and what saving it cost (the same figures as its metrics.jsonl line).
struct CheckpointStats {
  int64_t step = 0;
  double blocked_ms = 0;  // how long training waited: the snapshot, and any save still in flight
  double write_ms = 0;    // the background write, commit and retention
};

class TelemetrySink {
 public:
  virtual ~TelemetrySink() = default;
  // The loop entered a phase ("start", "train", "eval", "checkpoint", "done") at `step` steps completed:
  // what a heartbeat carries, so a failure report can say where the worker was.
  virtual void on_phase(const std::string& phase, int64_t step) = 0;
  // Rank 0 only, in a job of several ranks: its figures are the job's (reduced over the ranks).
  virtual void on_step(const StepStats& stats) = 0;
  // A checkpoint is committed (its manifest written): a restart may resume from it.
  virtual void on_checkpoint(const CheckpointStats& checkpoint) = 0;
  // Polled once per step: true ends the run cleanly after the step in progress.
  virtual bool stop_requested() = 0;
};

}  // namespace dtrn::train
