#include "dtrn/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dtrn/data/dataset.h"
#include "dtrn/data/loader.h"
#include "dtrn/model/model.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/evaluate.h"
#include "resume_policy.h"
#include "run_directory.h"
#include "run_log.h"
#include "run_report.h"
#include "stop_signals.h"

namespace dtrn::train {
namespace {

std::string default_run_dir() {
  const std::time_t now = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "runs/%Y%m%d-%H%M%S", std::localtime(&now));
  return buf;
}

// Keeps the lines of metrics.jsonl whose step is at most `step` (a resumed run rewrites what a crashed
// run wrote after its last checkpoint). Written to a temporary file and renamed.
Status truncate_metrics(const std::string& path, int64_t step) {
  auto text = read_file(path);
  if (!text.ok()) return text.status().code() == StatusCode::kNotFound ? Status::Ok() : text.status();
  std::istringstream in(*text);
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) break;  // a torn last line from a crash
    if (j.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  return write_file_atomic(path, kept);
}

// Runs one tiny DTRNet training step (forward, backward) on `device`; returns the error it raised, or ""
// when the device's backend has every kernel the model needs.
std::string training_gap(Device device) {
  try {
    model::ModelConfig c;
    c.d_model = 8;
    c.n_layers = 3;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.d_ff = 8;
    c.vocab_size = 60;
    c.seq_len = 4;
    c.layout = "TDT";
    model::DtrnModel probe(c, model::RoutingConfig{}, device, DType::kF32);
    probe.init(0);
    Tensor ids = Tensor::from_ints({1, 2, 3, 4}, {1, 4}, DType::kI32);
    model::ForwardOptions fo;
    fo.training = true;
    probe.forward(ids, ids, fo).loss.backward();
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

// train.device: cpu, cuda[:N], or auto. auto takes the GPU only where its backend can train the model
// (today's CUDA backend is the foundation slice: memory, copies, elementwise ops and matrix products), so
// `auto` always gives a run that works; an explicit cuda that cannot train is an error at start, not at
// the first missing kernel mid-step.
StatusOr<Device> resolve_device(const std::string& name, std::string* note) {
  if (name == "auto") {
    if (!cuda_available()) return Device::cpu();
    const std::string gap = training_gap(Device::cuda(0));
    if (gap.empty()) return Device::cuda(0);
    *note = "train.device auto: a GPU is present but the CUDA backend cannot train the model yet (" + gap +
            "); training on the CPU";
    return Device::cpu();
  }
  Device device;
  try {
    device = Device::parse(name);
  } catch (const Error& e) {
    return Status::InvalidArgument(std::string("train.device: ") + e.what());
  }
  if (device.is_cuda()) {
    const std::string gap = training_gap(device);
    if (!gap.empty()) return Status::InvalidArgument("train.device " + name + ": " + gap);
  }
  return device;
}

// Compares the resolved config stored in checkpoint `ckpt` with `config` (resume_policy.h); allowed
// changes are appended to `notes`.
Status check_resume(const std::string& ckpt, const JobConfig& config, int64_t step,
                    std::vector<std::string>* notes) {
  auto yaml = read_checkpoint_config(ckpt);
  if (!yaml.ok()) return yaml.status();
  auto saved = parse_job_config(*yaml);
  if (!saved.ok()) return Status::DataLoss(ckpt + "/config.yaml: " + saved.status().message());
  return check_resume_config(*saved, config, step, notes);
}

// What a run stopped by SIGTERM or SIGINT returns (stop_signals.h): the CLI prints it and exits with
// kExitStopped.
Status stopped_by_signal(int signal, int64_t step, const std::string& checkpoint, const std::string& run_dir) {
  return Status::Cancelled(std::string("stopped by ") + StopSignals::name(signal) + " after step " +
                           std::to_string(step) + "; checkpoint " + checkpoint +
                           "; continue with: dtrn train --run-dir " + run_dir + " --resume");
}

std::string format_rate(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  return buf;
}

}  // namespace

StarvationMonitor::Verdict StarvationMonitor::observe(int64_t layer, double f, bool fallback) {
  Runs* r = nullptr;
  for (auto& [l, runs] : runs_) if (l == layer) r = &runs;
  if (r == nullptr) r = &runs_.emplace_back(layer, Runs{}).second;
  r->low = (f < threshold_) ? r->low + 1 : 0;
  r->high = (f > 0.9) ? r->high + 1 : 0;
  return {fallback || r->low >= window_, r->high >= window_};
}

// The run in `dir` (opened by run_training). Nothing is written into the folder until every check has
// passed and the run starts (dir.started()), so that a refused start changes nothing.
static StatusOr<std::string> train_in(const JobConfig& config, const TrainRunOptions& options, RunDirectory& dir,
                                      const StopSignals& stop) {
  const std::string& run_dir = dir.path();
  const std::string config_yaml = to_yaml(config);
  // What a resume continues from, checked before anything else is opened.
  std::string ckpt;
  std::vector<std::string> skipped, resume_notes;  // logged once the run starts
  if (options.resume) {
    auto resolved_ckpt = resolve_checkpoint(run_dir, &skipped);
    for (const std::string& line : skipped) std::cerr << "dtrn train: --resume: " << line << std::endl;
    if (!resolved_ckpt.ok()) return Status::NotFound("--resume: " + resolved_ckpt.status().message());
    ckpt = *resolved_ckpt;
    auto step = read_checkpoint_step(ckpt);
    if (!step.ok()) return step.status();
    DTRN_RETURN_IF_ERROR(check_resume(ckpt, config, *step, &resume_notes));
    if (*step >= config.train.steps) {
      std::cout << "dtrn train: nothing to do: " << ckpt << " is at step " << *step << " of train.steps "
                << config.train.steps << " (raise it with --set train.steps=N to train on)" << std::endl;
      return run_dir;
    }
  }

  std::string device_note;
  auto resolved = resolve_device(config.train.device, &device_note);
  if (!resolved.ok()) return resolved.status();
  const Device device = *resolved;
  const std::string precision =
      config.train.precision == "auto" ? (device.is_cuda() ? "bf16" : "fp32") : config.train.precision;
  if (precision == "bf16" && device.is_cpu()) {
    return Status::InvalidArgument("train.precision: bf16 compute needs a CUDA device; the CPU trains in fp32");
  }
  if (config.parallel.dp != 1 || config.parallel.tp != 1) {
    return Status::InvalidArgument("parallel.dp/parallel.tp: this trainer runs one process; data and "
                                   "tensor parallelism arrive with the parallel module");
  }

  // Data.
  auto train_set = data::TokenDataset::Open(config.data.path, "train");
  if (!train_set.ok()) return train_set.status();
  std::shared_ptr<const data::TokenDataset> val_set;
  if (config.train.eval_every > 0) {
    auto v = data::TokenDataset::Open(config.data.path, "val");
    if (!v.ok()) return v.status();
    val_set = *v;
  }
  const int64_t tokens_vocab = static_cast<int64_t>((*train_set)->meta().vocab_size);
  if (config.model.vocab_size < tokens_vocab) {
    return Status::InvalidArgument("model.vocab_size: " + std::to_string(config.model.vocab_size) +
                                   " is smaller than the " + std::to_string(tokens_vocab) + " token ids of " +
                                   config.data.path);
  }

  // Model and optimizer.
  model::DtrnModel model(config.model, config.routing, device, DType::kF32);
  model.init(config.train.seed);
  if (!options.init_from.empty()) DTRN_RETURN_IF_ERROR(init_from_safetensors(options.init_from, &model));
  std::vector<ParamGroupEntry> groups;
  std::vector<Tensor> params;
  for (const auto& p : model.parameters()) {
    groups.push_back({p.name, p.tensor, p.decay});
    params.push_back(p.tensor);
  }
  AdamW optimizer(groups, AdamWOptions{0.9, 0.999, 1e-8, config.train.weight_decay});

  TrainProgress progress;
  progress.seed = config.train.seed;
  if (options.resume) {
    DTRN_RETURN_IF_ERROR(load_checkpoint(ckpt, &model, &optimizer, &progress));
    resume_notes.push_back("resumed from " + ckpt + " at step " + std::to_string(progress.step));
  }

  data::LoaderOptions lo;
  lo.seq_len = config.model.seq_len;
  lo.micro_batch = config.train.micro_batch;
  lo.global_batch = config.train.global_batch;
  lo.seed = config.train.seed;
  auto loader = data::DataLoader::Open(*train_set, lo, progress.sampler);
  if (!loader.ok()) return loader.status();
  std::vector<int32_t> val_tokens;
  double val_bytes_per_token = 0;
  if (val_set) {
    val_tokens = val_set->all_tokens();
    if (const auto* s = val_set->meta().split("val")) val_bytes_per_token = s->bytes_per_token();
  }

  // The run starts: from here on the folder is written and kept.
  dir.started();
  RunLog log(run_dir + "/train.log", options.quiet);
  DTRN_RETURN_IF_ERROR(write_file_atomic(run_dir + "/config.yaml", config_yaml));
  if (options.resume) {
    DTRN_RETURN_IF_ERROR(truncate_metrics(run_dir + "/metrics.jsonl", progress.step));
  } else {
    std::ofstream(run_dir + "/metrics.jsonl", std::ios::trunc);
  }
  std::ofstream metrics(run_dir + "/metrics.jsonl", std::ios::app);
  log.line("dtrn train: run directory " + run_dir);
  for (const std::string& line : skipped) log.record("--resume: " + line);
  for (const std::string& note : resume_notes) log.line(note);
  if (!device_note.empty()) log.line(device_note);
  log.line("model: " + std::to_string(model.parameter_count()) + " parameters, layout " + model.layout() +
           ", device " + device.str() + ", " + precision);

  const int64_t accum = config.train.global_batch / config.train.micro_batch;
  const int64_t tokens_per_step = config.train.global_batch * config.model.seq_len;
  StarvationMonitor monitor(config.routing.starvation_threshold, config.routing.starvation_window);
  RunReport report(progress.step, config.train.steps);
  std::string saved;  // the newest checkpoint this process wrote
  int64_t saved_step = -1;
  auto save = [&]() -> Status {
    progress.sampler = (*loader)->state();
    auto path = save_checkpoint(run_dir, model, optimizer, progress, config_yaml, config.checkpoint.keep);
    if (!path.ok()) return path.status();
    log.line("checkpoint " + *path);
    saved = *path;
    saved_step = progress.step;
    return Status::Ok();
  };

  try {
    for (int64_t step = progress.step; step < config.train.steps; ++step) {
      const auto t0 = std::chrono::steady_clock::now();
      const double lr = lr_at(step, config.train.warmup_steps, config.train.steps, config.train.lr,
                              config.train.min_lr);
      double loss_sum = 0, ce_sum = 0, sparsity_sum = 0, balance_sum = 0;
      std::vector<model::LayerRouting> layers;
      for (int64_t micro = 0; micro < accum; ++micro) {
        data::Batch batch = (*loader)->next();
        Tensor ids = Tensor::from_ints(std::vector<int64_t>(batch.inputs.begin(), batch.inputs.end()),
                                       {batch.B, batch.T}, DType::kI32);
        Tensor targets = Tensor::from_ints(std::vector<int64_t>(batch.targets.begin(), batch.targets.end()),
                                           {batch.B, batch.T}, DType::kI32);
        model::ForwardOptions fo;
        fo.training = true;
        fo.seed = config.train.seed;
        fo.draw = static_cast<uint64_t>(step * accum + micro);
        model::ForwardResult r = model.forward(ids, targets, fo);
        // Every term is averaged over micro-batches like CE, so lambda's strength does not depend on the
        // accumulation count (dtrnet-spec.md, Loss).
        scale(r.loss, 1.0 / static_cast<double>(accum)).backward();
        loss_sum += r.loss.item();
        ce_sum += r.ce.item();
        if (r.routing.sparsity.defined()) sparsity_sum += r.routing.sparsity.item();
        if (r.routing.balance.defined()) balance_sum += r.routing.balance.item();
        if (layers.empty()) {
          layers = r.layers;
          for (auto& l : layers) l.f = l.s = 0;
        }
        for (size_t i = 0; i < r.layers.size(); ++i) {
          layers[i].f += r.layers[i].f / static_cast<double>(accum);
          layers[i].s += r.layers[i].s / static_cast<double>(accum);
          layers[i].fallback = layers[i].fallback || r.layers[i].fallback;
        }
      }
      const double grad_norm = clip_grad_norm(params, config.train.clip);
      optimizer.step(lr);
      optimizer.zero_grad();
      progress.step = step + 1;
      progress.tokens += tokens_per_step;
      const double step_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const double tokens_per_s = static_cast<double>(tokens_per_step) / (step_ms / 1e3);

      nlohmann::json line = {{"kind", "train"},
                             {"step", progress.step},
                             {"loss", loss_sum / accum},
                             {"ce", ce_sum / accum},
                             {"routing_sparsity", sparsity_sum / accum},
                             {"routing_balance", balance_sum / accum},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens", progress.tokens},
                             {"tokens_per_s", tokens_per_s},
                             {"step_ms", step_ms}};
      nlohmann::json jl = nlohmann::json::array();
      std::ostringstream fractions;
      for (const auto& l : layers) {
        const auto verdict = monitor.observe(l.layer, l.f, l.fallback);
        jl.push_back({{"layer", l.layer}, {"f", l.f}, {"s", l.s}, {"fallback", l.fallback},
                      {"starved", verdict.starved}, {"saturated", verdict.saturated}});
        char buf[48];
        std::snprintf(buf, sizeof buf, " L%lld %.2f%s", static_cast<long long>(l.layer), l.f,
                      verdict.starved ? "!starved" : (verdict.saturated ? "!saturated" : ""));
        fractions << buf;
      }
      line["layers"] = jl;
      metrics << line.dump() << "\n";
      metrics.flush();
      char text[256];
      std::snprintf(text, sizeof text, "step %lld/%lld | loss %.4f | ce %.4f | lr %.2e | gnorm %.2f | %s tok/s |",
                    static_cast<long long>(progress.step), static_cast<long long>(config.train.steps),
                    loss_sum / accum, ce_sum / accum, lr, grad_norm, format_rate(tokens_per_s).c_str());
      log.line(std::string(text) + report.step_tail(progress.step, step_ms) +
               (layers.empty() ? "" : " | f:" + fractions.str()));

      if (config.train.eval_every > 0 &&
          (progress.step % config.train.eval_every == 0 || progress.step == config.train.steps)) {
        EvalResult e = evaluate_tokens(model, val_tokens, config.train.micro_batch, config.train.eval_batches,
                                       val_bytes_per_token);
        nlohmann::json v = {{"kind", "val"}, {"step", progress.step}, {"loss", e.loss}, {"ppl", e.ppl},
                            {"bits_per_byte", e.bits_per_byte}, {"tokens", e.tokens}};
        metrics << v.dump() << "\n";
        metrics.flush();
        std::snprintf(text, sizeof text, "val step %lld | loss %.4f | ppl %.2f | bpb %.4f | %lld tokens",
                      static_cast<long long>(progress.step), e.loss, e.ppl, e.bits_per_byte,
                      static_cast<long long>(e.tokens));
        log.line(text);
        report.validation(progress.step, e.loss);
      }
      if ((config.checkpoint.every > 0 && progress.step % config.checkpoint.every == 0) ||
          progress.step == config.train.steps) {
        DTRN_RETURN_IF_ERROR(save());
      }
      if (stop.received() != 0 && progress.step < config.train.steps) {
        if (saved_step != progress.step) DTRN_RETURN_IF_ERROR(save());
        log.line(report.summary(progress.step, progress.tokens, run_dir + "/checkpoints"));
        return stopped_by_signal(stop.received(), progress.step, saved, run_dir);
      }
    }
  } catch (const Error& e) {
    return Status::Internal(e.what());
  }
  log.line(report.summary(progress.step, progress.tokens, run_dir + "/checkpoints"));
  return run_dir;
}

StatusOr<std::string> run_training(const JobConfig& config, const TrainRunOptions& options) {
  if (options.resume && !options.init_from.empty()) {
    return Status::InvalidArgument("--resume and --init-from: --resume continues the run's checkpoint, "
                                   "--init-from starts a new run from weights; give one");
  }
  auto dir = RunDirectory::Open(options.run_dir.empty() ? default_run_dir() : options.run_dir, options.resume);
  if (!dir.ok()) return dir.status();
  StopSignals stop;
  auto run = train_in(config, options, **dir, stop);
  if (!run.ok() && run.status().code() != StatusCode::kCancelled && (*dir)->is_started()) {
    RunLog::failure((*dir)->path() + "/train.log", run.status().message());
  }
  return run;
}

}  // namespace dtrn::train
