// `dtrn bench`: training throughput, MFU and peak memory of a job config (train/bench.h).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "dtrn/train/bench.h"
#include "dtrn/train/job_config.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn bench --config job.yaml [--steps N] [--warmup N] [--routed-fraction R]\n"
    "                  [--checkpoint-every K [--checkpoint-dir DIR]] [--phases N] [--set section.key=value ...]\n"
    "                  [--json]\n";

constexpr char kHelp[] =
    "\nMeasures training throughput of a config on synthetic tokens (no data loading): one micro-batch of\n"
    "train.micro_batch x model.seq_len tokens per step (forward, backward, clipped AdamW at learning rate 0,\n"
    "so the weights and the routing stay put while every kernel runs), on the device and precision\n"
    "train.device / train.precision resolve to.\n\n"
    "  --config FILE          the job config (data.path is not read)\n"
    "  --set KEY=VALUE        override any key (repeatable), e.g. --set train.micro_batch=8\n"
    "  --steps N              timed steps (default 20)\n"
    "  --warmup N             untimed steps first (default 5)\n"
    "  --routed-fraction R    pin every D layer's routed fraction near R by calibrating the routers'\n"
    "                         output bias (the protocol of the PyTorch peer); default: as initialised\n"
    "  --checkpoint-every K   save asynchronously after every K-th timed step, as dtrn train does (one\n"
    "                         process; checkpoint.keep applies), and report what the saves cost\n"
    "  --checkpoint-dir DIR   the run folder the saves go to, kept for `dtrn ckpt verify DIR` (created when\n"
    "                         missing; it must not hold checkpoints/ yet); default: a temporary folder,\n"
    "                         removed at the end\n"
    "  --phases N             N more steps after the timed ones, the device synchronised around each phase\n"
    "                         (forward, backward, optimizer): when the host had queued each phase's work\n"
    "                         and when the device had done it (the host's time near the device's: the\n"
    "                         device waited on launches)\n"
    "  --json                 print one JSON object instead of the table\n\n"
    "Prints step time, tokens/s, achieved TFLOP/s and MFU (FLOPs counted as in dtrnet-spec.md, D layers at\n"
    "their measured routed fraction; the peak is the GPU's dense bf16 rate, 989 TFLOP/s for H100/H200 SXM),\n"
    "peak device memory, cudaMalloc calls during the timed steps, and each D layer's routed fraction.\n\n"
    "With --checkpoint-every every timed step is timed alone (the device synchronised at its end; the mean\n"
    "step time then includes the saves). For each save: the wall time of its step, the time training was\n"
    "blocked (waiting for the previous save, then the snapshot into host memory), the background write\n"
    "time (write, fsync, commit, retention) and where it went (appends, fsyncs, other file calls, the work\n"
    "between them: hashing and encoding), the checkpoint's bytes and write throughput (MB = 1e6 bytes);\n"
    "the median step time of the steps without a save, apart for those with a write in flight; and the\n"
    "disk's sequential write bandwidth (the largest checkpoint's size written into DIR in 64 MiB appends,\n"
    "one fsync) for comparison.\n\n"
    "Tensor parallelism: run it as parallel.tp ranks, e.g.\n"
    "  mpirun -np 2 dtrn bench --config deploy/configs/1.3b.yaml --set parallel.tp=2\n"
    "(the step time is the group's, TFLOP/s and MFU per GPU, memory the largest rank's; rank 0 prints).\n";

nlohmann::json checkpoints_json(const train::BenchCheckpoints& c) {
  nlohmann::json saves = nlohmann::json::array();
  for (const auto& s : c.saves) {
    saves.push_back({{"step", s.step}, {"step_ms", s.step_ms}, {"blocked_ms", s.blocked_ms},
                     {"write_ms", s.write_ms}, {"bytes", s.bytes}, {"write_MB_s", s.write_mb_s},
                     {"append_ms", s.append_ms}, {"fsync_ms", s.fsync_ms}, {"fs_other_ms", s.fs_other_ms},
                     {"compute_ms", s.compute_ms}});
  }
  return {{"dir", c.run_dir},
          {"every", c.every},
          {"saves", saves},
          {"quiet_step_ms", c.quiet_step_ms},
          {"quiet_steps", c.quiet_steps},
          {"writing_step_ms", c.writing_step_ms},
          {"writing_steps", c.writing_steps},
          {"disk_bytes", c.disk_bytes},
          {"disk_MB_s", c.disk_mb_s}};
}

void print_checkpoints(const train::BenchCheckpoints& c, bool temporary) {
  std::printf("checkpoints   a save every %lld timed steps into %s%s\n", static_cast<long long>(c.every),
              c.run_dir.c_str(), temporary ? " (temporary, removed)" : "");
  for (const auto& s : c.saves) {
    std::printf("  step %-7lld blocked %.1f ms of a %.1f ms step, write %.1f ms, %.1f MB at %.1f MB/s\n",
                static_cast<long long>(s.step), s.blocked_ms, s.step_ms, s.write_ms, s.bytes / 1e6,
                s.write_mb_s);
    std::printf("                the write: appends %.1f ms, fsyncs %.1f ms, other file calls %.1f ms, "
                "hashing and encoding %.1f ms\n",
                s.append_ms, s.fsync_ms, s.fs_other_ms, s.compute_ms);
  }
  std::printf("steps         median %.2f ms over %lld quiet steps, %.2f ms over %lld with a write in flight\n",
              c.quiet_step_ms, static_cast<long long>(c.quiet_steps), c.writing_step_ms,
              static_cast<long long>(c.writing_steps));
  std::printf("disk          %.1f MB/s sequential write + fsync of %.1f MB in the same folder\n", c.disk_mb_s,
              c.disk_bytes / 1e6);
}

}  // namespace

int run_bench(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"config"}, {"set", true, true}, {"steps"}, {"warmup"}, {"routed-fraction"},
                           {"checkpoint-every"}, {"checkpoint-dir"}, {"phases"}, {"json", false}, {"help", false}});
  if (!args.ok()) return usage_error("bench", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->has("config")) return usage_error("bench", "--config is required");
  auto config = train::load_job_config(*args->get("config"), args->all("set"));
  if (!config.ok()) return fail("bench", config.status().message());
  train::BenchOptions options;
  auto steps = args->get_int("steps", options.steps);
  auto warmup = args->get_int("warmup", options.warmup);
  auto every = args->get_int("checkpoint-every", options.checkpoint_every);
  auto phases = args->get_int("phases", options.phase_steps);
  if (!steps.ok()) return usage_error("bench", steps.status().message());
  if (!warmup.ok()) return usage_error("bench", warmup.status().message());
  if (!every.ok()) return usage_error("bench", every.status().message());
  if (!phases.ok()) return usage_error("bench", phases.status().message());
  options.steps = *steps;
  options.warmup = *warmup;
  options.checkpoint_every = *every;
  options.phase_steps = *phases;
  if (auto dir = args->get("checkpoint-dir")) {
    if (options.checkpoint_every == 0) return usage_error("bench", "--checkpoint-dir needs --checkpoint-every");
    options.checkpoint_dir = *dir;
  }
  if (auto r = args->get("routed-fraction")) {
    try {
      size_t used = 0;
      options.routed_fraction = std::stod(*r, &used);
      if (used != r->size() || options.routed_fraction < 0) throw std::invalid_argument(*r);
    } catch (const std::exception&) {
      return usage_error("bench", "--routed-fraction: '" + *r + "' is not a number in [0, 1]");
    }
  }
  auto res = train::run_bench(*config, options);
  if (!res.ok()) return fail("bench", res.status().message());
  if (res->rank != 0) return 0;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [layer, f] : res->routed_fraction) layers.push_back({{"layer", layer}, {"f", f}});
  if (args->has("json")) {
    nlohmann::json j = {{"device", res->device},         {"precision", res->precision},
                        {"layout", res->layout},         {"params_M", res->parameters / 1e6},
                        {"tp", res->tp},
                        {"batch", res->batch},           {"seq", res->seq},
                        {"step_ms", res->step_ms},       {"tok_s", res->tokens_per_s},
                        {"tflops", res->tflops},         {"peak_tflops", res->peak_tflops},
                        {"mfu", res->mfu},               {"peak_mem_GiB", res->peak_memory_gib},
                        {"steady_mallocs", res->steady_device_mallocs},
                        {"steady_growth_MiB", static_cast<double>(res->steady_growth_bytes) / (1 << 20)},
                        {"steady_growth_steps", res->steady_growth_steps},
                        {"largest_growing_request_MiB",
                         static_cast<double>(res->largest_growing_request) / (1 << 20)},
                        {"loss", res->final_loss},       {"layers", layers}};
    if (res->checkpoints) j["checkpoint"] = checkpoints_json(*res->checkpoints);
    if (const auto& p = res->phases) {
      j["phases"] = {{"steps", p->steps},
                     {"forward_host_ms", p->forward_host_ms},     {"forward_ms", p->forward_ms},
                     {"backward_host_ms", p->backward_host_ms},   {"backward_ms", p->backward_ms},
                     {"optimizer_host_ms", p->optimizer_host_ms}, {"optimizer_ms", p->optimizer_ms}};
    }
    std::cout << j.dump() << std::endl;
    return 0;
  }
  std::printf("device        %s (%s)\n", res->device.c_str(), res->precision.c_str());
  std::printf("model         %.1fM parameters, layout %s, %lld x %lld tokens per step, tp %lld\n",
              res->parameters / 1e6, res->layout.c_str(), static_cast<long long>(res->batch),
              static_cast<long long>(res->seq), static_cast<long long>(res->tp));
  std::printf("step          %.2f ms, %.0f tokens/s\n", res->step_ms, res->tokens_per_s);
  if (res->peak_tflops > 0) {
    std::printf("compute       %.1f TFLOP/s, MFU %.1f%% of %.0f TFLOP/s (dense bf16 peak)\n", res->tflops,
                100 * res->mfu, res->peak_tflops);
  } else {
    std::printf("compute       %.3f TFLOP/s (no MFU: peak unknown for this device)\n", res->tflops);
  }
  std::printf("memory        peak %.2f GiB, %lld cudaMalloc calls in timed steps (%.1f MiB)\n",
              res->peak_memory_gib, static_cast<long long>(res->steady_device_mallocs),
              static_cast<double>(res->steady_growth_bytes) / (1 << 20));
  if (!res->routed_fraction.empty()) {
    std::printf("routed        ");
    for (const auto& [layer, f] : res->routed_fraction) std::printf("L%lld %.3f  ", static_cast<long long>(layer), f);
    std::printf("\n");
  }
  if (res->checkpoints) print_checkpoints(*res->checkpoints, options.checkpoint_dir.empty());
  if (const auto& p = res->phases) {
    std::printf("phases        %lld more steps, synchronised around each phase: queued by the host / done, ms\n",
                static_cast<long long>(p->steps));
    std::printf("              forward %.2f / %.2f, backward %.2f / %.2f, optimizer %.2f / %.2f\n",
                p->forward_host_ms, p->forward_ms, p->backward_host_ms, p->backward_ms, p->optimizer_host_ms,
                p->optimizer_ms);
  }
  return 0;
}

}  // namespace dtrn::cli
