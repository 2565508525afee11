// Where and in what precision a job computes: train.device and train.precision resolved against the
// machine (shared by the trainer and `dtrn bench`).
//
// train.device: cpu, cuda[:N], or auto. auto takes the GPU when one is present and its backend can train
// the model (probed with one tiny training step), so `auto` always gives a run that works; an explicit
// cuda that cannot train is an error at start, not at the first missing kernel mid-step.
// train.precision: fp32, bf16 (CUDA only: bf16 compute with f32 master weights, moments and gradients),
// or auto (bf16 on CUDA, fp32 on the CPU).
#pragma once

#include <string>

#include "dtrn/parallel/launch_env.h"
#include "dtrn/runtime/device.h"
#include "dtrn/runtime/dtype.h"
#include "dtrn/runtime/status.h"
#include "dtrn/train/job_config.h"

namespace dtrn::train {

struct Placement {
  Device device;
  DType compute_dtype = DType::kF32;
  std::string precision_name() const { return compute_dtype == DType::kBF16 ? "bf16" : "fp32"; }
};

// `note` receives a line to log when auto chose the CPU although a GPU is present. `gpu` is the GPU that
// auto and a plain `cuda` mean. A CUDA placement becomes the calling thread's current device (use_device).
StatusOr<Placement> resolve_placement(const TrainConfig& train, std::string* note, int gpu = 0);
// train.device resolved for one rank of a job: a GPU rank of a multi-rank job takes the GPU of its local
// rank unless train.device named one; GPU 0 is not touched by the others (the probe runs on the rank's).
StatusOr<Placement> rank_placement(const TrainConfig& train, const parallel::LaunchEnv& launch, std::string* note);

}  // namespace dtrn::train
