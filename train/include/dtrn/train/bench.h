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
#pragma once

#include <cstdint>
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
  std::vector<std::pair<int64_t, double>> routed_fraction;  // per D layer, mean over the timed steps
  double final_loss = 0;
};

StatusOr<BenchResult> run_bench(const JobConfig& config, const BenchOptions& options);

// Training FLOPs of one step of `batch` sequences of `seq` tokens for the resolved layout (one letter per
// layer); routed_fraction holds one value per D layer, in layer order.
double training_flops(const model::ModelConfig& config, const std::string& layout, int64_t batch, int64_t seq,
                      const std::vector<double>& routed_fraction);

// The dense bf16 peak of a device by name, in FLOP/s (989e12 for H100/H200 SXM); 0 when unknown.
double dense_bf16_peak(const std::string& device_name);

}  // namespace dtrn::train
