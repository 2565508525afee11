// `dtrn bench`: training throughput of a job config without data loading: synthetic tokens, one
// micro-batch per step (forward, backward, clipped AdamW), warm-up steps first, then the mean step time
// over the timed steps, measured between device synchronisations.
//
// FLOPs are counted as ../shared/dtrnet-spec.md says (2*M*N*K per product, x3 for forward and backward,
// causal attention as half the square, and in D layers only the routed work at each layer's measured
// routed fraction); MFU is against the GPU's dense bf16 peak (989 TFLOP/s for H100 and H200 SXM).
// The routed fraction can be pinned by calibrating the routers as ../shared/peer/torch_dtrnet.py does
// (DtrnModel::calibrate_routing) before the warm-up; the learning rate is 0, so the optimizer does all
// its work while the routing stays where it was put (the peer trains at a small rate and drifts). The
// measured fraction of every D layer is reported and is what the FLOP count uses.
//
// Tensor parallelism: launched as parallel.tp ranks (mpirun, srun; parallel.dp must be 1), the ranks run
// one model split over them (model.h, Note [Tensor-parallel DTRNet]) on the same tokens; the step time is
// the group's, TFLOP/s and MFU are per GPU (the whole model's FLOPs over tp GPUs), the peak memory is the
// largest of any rank's, and rank 0's result is the one to report.
//
// Saves (checkpoint_every > 0, one process): every K-th timed step ends with an asynchronous save taken
// exactly as the Trainer takes it (join the previous save, snapshot into host memory, hand it to the
// AsyncCheckpointWriter), so the bench measures what a save costs training at full speed without a data
// set. Each timed step is then measured alone (the device synchronised at its end) and classed: a save
// step, a step with a background write in flight at its start, or a quiet one. After the last save the
// file system's sequential write bandwidth is measured in the same folder, for comparison. step_ms stays
// the mean over all timed steps, the saves' blocking parts included.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dtrn/model/config.h"
#include "dtrn/runtime/status.h"
#include "dtrn/train/job_config.h"

namespace dtrn::train {

struct BenchOptions {
  int64_t steps = 20;
  int64_t warmup = 5;
  double routed_fraction = -1;  // in [0, 1]: calibrate the routers to it; < 0: leave them as initialised
  int64_t checkpoint_every = 0;  // > 0: save after every K-th timed step (parallel.tp must be 1)
  std::string checkpoint_dir;    // the run folder the saves go to (kept; it must hold no checkpoints/
                                 // yet); empty: a temporary folder, removed at the end
  int64_t phase_steps = 0;  // > 0: that many more steps after the timed ones, split into phases (below)
};

// Where a step's time goes between the host and the device: steps run after the timed ones with the
// device synchronised before and after each phase (forward, backward, optimizer). For each phase, the
// mean time until the host had queued all its work (host_ms) and until the device had done it (ms).
// host_ms near ms says the device waited on the host's launches in that phase (the forward's also
// holds its D layers' reads of the routed count); host_ms well below ms says the device was the bound.
struct BenchPhases {
  int64_t steps = 0;
  double forward_host_ms = 0, forward_ms = 0;
  double backward_host_ms = 0, backward_ms = 0;
  double optimizer_host_ms = 0, optimizer_ms = 0;
};

// MB are 1e6 bytes throughout.
struct BenchSave {
  int64_t step = 0;        // optimizer steps completed when it was taken: its folder is step-N
  double step_ms = 0;      // the wall time of the step it ended, its save's blocking part included
  double blocked_ms = 0;   // that part: waiting for the previous save to finish, then the snapshot
  double write_ms = 0;     // in the background: write, fsync, commit and retention
  uint64_t bytes = 0;      // of the files in its checkpoint folder
  double write_mb_s = 0;   // bytes / write_ms
  // Where write_ms went: appends (into the page cache), fsyncs of files and folders, other file-system
  // calls (creations, renames, removals), and the rest, between the calls (hashing, encoding).
  double append_ms = 0, fsync_ms = 0, fs_other_ms = 0, compute_ms = 0;
};

struct BenchCheckpoints {
  std::string run_dir;  // checkpoints/ inside it
  int64_t every = 0;
  std::vector<BenchSave> saves;
  double quiet_step_ms = 0;    // median of the timed steps with no save and no write in flight; 0: none
  int64_t quiet_steps = 0;
  double writing_step_ms = 0;  // median of the timed steps with no save and a write in flight at their start
  int64_t writing_steps = 0;
  uint64_t disk_bytes = 0;     // the largest save's size, written sequentially into run_dir
  double disk_mb_s = 0;        // ... with one fsync at the end, from open to close
};

struct BenchResult {
  std::string device;     // "NVIDIA H200", "cpu"
  std::string precision;  // bf16 | fp32
  std::string layout;
  int64_t parameters = 0;  // of the whole model
  int64_t tp = 1;          // TP ranks that ran it
  int rank = 0;            // this process's rank in the group (0 reports)
  int64_t batch = 0, seq = 0;
  double step_ms = 0;
  double tokens_per_s = 0;
  double flops_per_step = 0;  // the spec's count at the measured routed fractions
  double tflops = 0;          // achieved, per GPU
  double peak_tflops = 0;     // the device's dense bf16 peak; 0 when unknown (no MFU then)
  double mfu = 0;
  double peak_memory_gib = 0;          // the allocator's peak over the whole run (the largest rank's)
  int64_t steady_device_mallocs = 0;   // cudaMalloc calls during the timed steps (0 expected)
  int64_t steady_growth_bytes = 0;     // what those reserved
  std::vector<int64_t> steady_growth_steps;  // the timed steps (from 1) in which they happened
  int64_t largest_growing_request = 0;  // the largest block whose allocation grew the pool, whole run
  std::vector<std::pair<int64_t, double>> routed_fraction;  // per D layer, mean over the timed steps
  double final_loss = 0;
  std::optional<BenchCheckpoints> checkpoints;  // with BenchOptions::checkpoint_every > 0
  std::optional<BenchPhases> phases;            // with BenchOptions::phase_steps > 0
};

StatusOr<BenchResult> run_bench(const JobConfig& config, const BenchOptions& options);

// Training FLOPs of one step of `batch` sequences of `seq` tokens for the resolved layout (one letter per
// layer); routed_fraction holds one value per D layer, in layer order.
double training_flops(const model::ModelConfig& config, const std::string& layout, int64_t batch, int64_t seq,
                      const std::vector<double>& routed_fraction);

// The dense bf16 peak of a device by name, in FLOP/s (989e12 for H100/H200 SXM); 0 when unknown.
double dense_bf16_peak(const std::string& device_name);

}  // namespace dtrn::train
