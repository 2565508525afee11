// The job config: one YAML file with the sections of DESIGN.md (model, routing, train, parallel, data,
// checkpoint, telemetry), overridable with `--set section.key=value`.
//
// Parsing is strict: an unknown section or key, a section or key given twice, a missing required key, a
// value of the wrong type, and inconsistent values (heads not dividing d_model, global_batch not divisible
// by micro_batch * dp, warmup_steps > steps, ...) are rejected with one message naming the key. Defaults are the ones DESIGN.md and dtrnet-spec.md give.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dtrn/model/config.h"
#include "dtrn/runtime/status.h"

namespace dtrn::train {

struct TrainConfig {
  int64_t steps = 0;
  int64_t micro_batch = 0;
  int64_t global_batch = 0;
  double lr = 3e-4;
  double min_lr = 1e-5;
  int64_t warmup_steps = 0;
  double weight_decay = 0.01;
  double clip = 1.0;
  uint64_t seed = 0;
  std::string device = "auto";     // cpu | cuda | cuda:N | auto (cuda when present)
  std::string precision = "auto";  // fp32 | bf16 | auto (fp32 on cpu, bf16 on cuda)
  int64_t eval_every = 0;          // 0: no periodic validation
  int64_t eval_batches = 8;
};

struct ParallelConfig {
  int64_t dp = 1;
  int64_t tp = 1;
  int64_t zero = 0;         // 1: ZeRO-1 (optimizer state sharded over the DP group)
  double bucket_mb = 25;    // gradient bucket size for the overlapped DP all-reduce, in MB
  double timeout_s = 300;   // a collective waiting longer ends the job (Note [Lost ranks] in parallel/)
};

struct DataConfig {
  std::string path;  // a `dtrn prep` output folder
};

struct CheckpointConfig {
  int64_t every = 0;  // 0: only at the end
  int64_t keep = 3;   // newest checkpoints kept; 0 keeps all
  int64_t keep_every = 0;  // also keep every checkpoint whose step is a multiple of it; 0: none
};

struct TelemetryConfig {
  int64_t every = 1;
};

struct JobConfig {
  model::ModelConfig model;
  model::RoutingConfig routing;
  TrainConfig train;
  ParallelConfig parallel;
  DataConfig data;
  CheckpointConfig checkpoint;
  TelemetryConfig telemetry;
};

// The default of routing.balance_weight (beta), chosen by the ablation in docs/routing-loss.md: at the
// scales measured, beta > 0 changed no validation loss beyond seed noise and made layers fall back more
// often, so the default reproduces the reference loss (beta = 0); the term stays available.
inline constexpr double kDefaultBalanceWeight = 0.0;

// The default of routing.bias_rate: the threshold bias on, each step set to minus the (1 - rho)-quantile
// of Delta that the previous step measured (rate 1: no smoothing). The routers' distribution moves by
// more than its width per step, so the lag of a slower EMA costs more than the batch noise it removes.
// Chosen by the GPU ablation of docs/routing-loss.md (bench/routing_ablation.sh, 44 runs at ~25M and
// ~125M parameters): every D layer held 10-11% routed with no starvation at both sizes, within 0.6% of
// dense, where the spec's terms alone starved or saturated.
inline constexpr double kDefaultBiasRate = 1.0;

// Parses YAML text; `overrides` are "section.key=value" strings applied on top, in order.
StatusOr<JobConfig> parse_job_config(const std::string& yaml_text,
                                     const std::vector<std::string>& overrides = {});
StatusOr<JobConfig> load_job_config(const std::string& path,
                                    const std::vector<std::string>& overrides = {});
// Consistency checks across keys (also run by the parsers).
Status validate(const JobConfig& config);
// The fully resolved config as YAML (every key, defaults included): written to the run directory and
// stored in checkpoints; parse_job_config(to_yaml(c)) == c. Numbers are written in their shortest exact
// form (0.003, not 0.0030000000000000001).
std::string to_yaml(const JobConfig& config);
// Every key as ("section.key", value as to_yaml writes it), in to_yaml's order: for comparing configs.
std::vector<std::pair<std::string, std::string>> config_entries(const JobConfig& config);

}  // namespace dtrn::train
