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
#include "async_checkpoint.h"
#include "placement.h"
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

// A [B, T] i32 CPU tensor of a batch's tokens; the model uploads it (without a device synchronisation).
Tensor host_tokens(const std::vector<int32_t>& tokens, int64_t b, int64_t t) {
  Tensor out = Tensor::empty({b, t}, DType::kI32);
  std::copy(tokens.begin(), tokens.end(), out.data<int32_t>());
  return out;
}

// The scalars a step reports, summed over its micro-batches where the model runs and read once.
class StepSums {
 public:
  struct Values {
    double loss = 0, ce = 0, sparsity = 0, balance = 0, grad_norm = 0;
  };

  // Adds one micro-batch's terms (each divided by `accum`); layers collects f and fallback on the host
  // and s on the device.
  void add(const model::ForwardResult& r, int64_t accum, std::vector<model::LayerRouting>* layers) {
    NoGradGuard no_grad;
    const double w = 1.0 / static_cast<double>(accum);
    accumulate(&loss_, r.loss, w);
    accumulate(&ce_, r.ce, w);
    accumulate(&sparsity_, r.routing.sparsity, w);
    accumulate(&balance_, r.routing.balance, w);
    if (layers->empty()) {
      *layers = r.layers;
      for (auto& l : *layers) {
        l.f = 0;
        l.s = Tensor();
      }
    }
    for (size_t i = 0; i < r.layers.size(); ++i) {
      (*layers)[i].f += r.layers[i].f * w;
      accumulate(&(*layers)[i].s, r.layers[i].s, w);
      (*layers)[i].fallback = (*layers)[i].fallback || r.layers[i].fallback;
    }
  }

  // Reads every sum and the squared gradient norm in one device-to-host copy; layers' s become
  // host-side scalars.
  Values read(const Tensor& grad_norm_sq, std::vector<model::LayerRouting>* layers) {
    NoGradGuard no_grad;
    std::vector<Tensor> parts;
    auto put = [&](const Tensor& t) {
      parts.push_back((t.defined() ? t : Tensor::zeros({}, DType::kF64, grad_norm_sq.device()))
                          .reshape({1})
                          .to(DType::kF64));
    };
    for (const Tensor& t : {loss_, ce_, sparsity_, balance_, grad_norm_sq}) put(t);
    for (const auto& l : *layers) put(l.s);
    const std::vector<double> host = concat(parts, 0).to_vector();
    Values v{host[0], host[1], host[2], host[3], std::sqrt(host[4])};
    for (size_t i = 0; i < layers->size(); ++i) {
      (*layers)[i].s = Tensor::full({}, host[5 + i], DType::kF64);
    }
    return v;
  }

 private:
  static void accumulate(Tensor* sum, const Tensor& term, double w) {
    if (!term.defined()) return;
    Tensor t = scale(term.detach(), w);
    *sum = sum->defined() ? dtrn::add(*sum, t) : t;
  }

  Tensor loss_, ce_, sparsity_, balance_;
};

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

// The telemetry view of a metrics.jsonl train line: one source for both, so they cannot disagree.
StepStats step_stats(const nlohmann::json& line) {
  StepStats s;
  s.step = line["step"];
  s.loss = line["loss"];
  s.tokens_per_s = line["tokens_per_s"];
  s.step_ms = line["step_ms"];
  for (const auto& l : line["layers"]) {
    s.layers.push_back({l["layer"], l["f"], l["s"], l["fallback"], l["starved"], l["saturated"]});
  }
  return s;
}

}  // namespace

std::vector<MonitorRun> StarvationMonitor::runs() const {
  std::vector<MonitorRun> out;
  for (const auto& [layer, r] : runs_) out.push_back({layer, r.low, r.high});
  return out;
}

void StarvationMonitor::restore(const std::vector<MonitorRun>& runs) {
  runs_.clear();
  for (const MonitorRun& r : runs) runs_.emplace_back(r.layer, Runs{r.low, r.high});
}

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
  auto placement = resolve_placement(config.train, &device_note);
  if (!placement.ok()) return placement.status();
  const Device device = placement->device;
  const std::string precision = placement->precision_name();
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

  // Model and optimizer: bf16 computes with f32 master weights, moments and gradients.
  model::DtrnModel model(config.model, config.routing, device, placement->compute_dtype);
  model.init(config.train.seed);
  if (!options.init_from.empty()) DTRN_RETURN_IF_ERROR(init_from_safetensors(options.init_from, &model));
  std::vector<ParamGroupEntry> groups;
  for (const auto& p : model.parameters()) groups.push_back({p.name, p.tensor, p.decay, p.compute});
  AdamW optimizer(groups, AdamWOptions{0.9, 0.999, 1e-8, config.train.weight_decay});

  TrainProgress progress;
  progress.seed = config.train.seed;
  if (options.resume) {
    DTRN_RETURN_IF_ERROR(load_checkpoint(ckpt, &model, &optimizer, &progress));
    if (progress.seed != config.train.seed) {
      return Status::FailedPrecondition("--resume: " + ckpt + " was trained with seed " + std::to_string(progress.seed) +
                                        ", train.seed is " + std::to_string(config.train.seed));
    }
    resume_notes.push_back("resumed from " + ckpt + " at step " + std::to_string(progress.step));
  }

  data::LoaderOptions lo;
  lo.seq_len = config.model.seq_len;
  lo.micro_batch = config.train.micro_batch;
  lo.global_batch = config.train.global_batch;
  lo.seed = progress.seed;
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
  std::vector<std::string> cleaned;
  DTRN_RETURN_IF_ERROR(clean_checkpoints(run_dir, &cleaned));
  for (const std::string& line : cleaned) log.line("checkpoints: " + line);
  for (const std::string& line : skipped) log.record("--resume: " + line);
  for (const std::string& note : resume_notes) log.line(note);
  if (!device_note.empty()) log.line(device_note);
  log.line("model: " + std::to_string(model.parameter_count()) + " parameters, layout " + model.layout() +
           ", device " + device.str() + ", " + precision);

  const int64_t accum = config.train.global_batch / config.train.micro_batch;
  const int64_t tokens_per_step = config.train.global_batch * config.model.seq_len;
  StarvationMonitor monitor(config.routing.starvation_threshold, config.routing.starvation_window);
  RunReport report(progress.step, config.train.steps);
  monitor.restore(progress.monitor);
  std::string saved;  // the newest checkpoint this process wrote
  // Saves are written in the background (async_checkpoint.h); a save is reported once it is joined: at
  // the first step boundary after it finished (so the coordinator learns of it promptly), at the next
  // save, on a stop and at the end.
  AsyncCheckpointWriter writer(run_dir, {config.checkpoint.keep, config.checkpoint.keep_every});
  double blocked_ms = 0;       // of the save in flight
  int64_t started_step = -1;  // of the newest save started
  const auto ms_since = [](auto t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  auto join_save = [&]() -> Status {
    auto done = writer.wait();
    if (!done) return Status::Ok();
    if (!done->dir.ok()) return done->dir.status();
    metrics << nlohmann::json{{"kind", "checkpoint"}, {"step", done->step}, {"blocked_ms", blocked_ms},
                              {"write_ms", done->write_ms}}.dump()
            << "\n";
    metrics.flush();
    log.line("checkpoint " + *done->dir);
    saved = *done->dir;
    if (options.telemetry) options.telemetry->on_checkpoint(done->step);
    return Status::Ok();
  };
  auto save = [&]() -> Status {
    const auto t0 = std::chrono::steady_clock::now();
    DTRN_RETURN_IF_ERROR(join_save());
    progress.sampler = (*loader)->state();
    progress.monitor = monitor.runs();
    auto snapshot = snapshot_checkpoint(model, optimizer, progress, config_yaml);
    if (!snapshot.ok()) return snapshot.status();
    writer.start(std::move(*snapshot), progress.step);
    started_step = progress.step;
    blocked_ms = ms_since(t0);
    return Status::Ok();
  };

  if (options.telemetry) options.telemetry->on_phase("train", progress.step);
  try {
    for (int64_t step = progress.step; step < config.train.steps; ++step) {
      if (options.telemetry && options.telemetry->stop_requested()) {
        log.line("stopped at step " + std::to_string(progress.step) + " on request");
        break;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const double lr = lr_at(step, config.train.warmup_steps, config.train.steps, config.train.lr,
                              config.train.min_lr);
      // Per-step sums stay on the device until the step ends: one read per step, not per micro-batch.
      StepSums sums;
      std::vector<model::LayerRouting> layers;
      for (int64_t micro = 0; micro < accum; ++micro) {
        data::Batch batch = (*loader)->next();
        Tensor ids = host_tokens(batch.inputs, batch.B, batch.T);
        Tensor targets = host_tokens(batch.targets, batch.B, batch.T);
        model::ForwardOptions fo;
        fo.training = true;
        fo.seed = config.train.seed;
        fo.draw = static_cast<uint64_t>(step * accum + micro);
        model::ForwardResult r = model.forward(ids, targets, fo);
        // Every term is averaged over micro-batches like CE, so lambda's strength does not depend on the
        // accumulation count (dtrnet-spec.md, Loss).
        scale(r.loss, 1.0 / static_cast<double>(accum)).backward();
        sums.add(r, accum, &layers);
      }
      const Tensor grad_norm_sq = optimizer.clip_and_step(lr, config.train.clip);
      optimizer.zero_grad();
      const StepSums::Values v = sums.read(grad_norm_sq, &layers);
      const double loss_mean = v.loss, ce_mean = v.ce, grad_norm = v.grad_norm;
      progress.step = step + 1;
      progress.tokens += tokens_per_step;
      progress.samples += config.train.global_batch;
      const double step_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const double tokens_per_s = static_cast<double>(tokens_per_step) / (step_ms / 1e3);

      nlohmann::json line = {{"kind", "train"},
                             {"step", progress.step},
                             {"loss", loss_mean},
                             {"ce", ce_mean},
                             {"routing_sparsity", v.sparsity},
                             {"routing_balance", v.balance},
                             {"lr", lr},
                             {"grad_norm", grad_norm},
                             {"tokens", progress.tokens},
                             {"tokens_per_s", tokens_per_s},
                             {"step_ms", step_ms}};
      nlohmann::json jl = nlohmann::json::array();
      std::ostringstream fractions;
      for (const auto& l : layers) {
        const auto verdict = monitor.observe(l.layer, l.f, l.fallback);
        jl.push_back({{"layer", l.layer}, {"f", l.f}, {"s", l.s.item()}, {"fallback", l.fallback},
                      {"starved", verdict.starved}, {"saturated", verdict.saturated}});
        char buf[48];
        std::snprintf(buf, sizeof buf, " L%lld %.2f%s", static_cast<long long>(l.layer), l.f,
                      verdict.starved ? "!starved" : (verdict.saturated ? "!saturated" : ""));
        fractions << buf;
      }
      line["layers"] = jl;
      if (options.telemetry) options.telemetry->on_step(step_stats(line));
      metrics << line.dump() << "\n";
      metrics.flush();
      char text[256];
      std::snprintf(text, sizeof text, "step %lld/%lld | loss %.4f | ce %.4f | lr %.2e | gnorm %.2f | %s tok/s |",
                    static_cast<long long>(progress.step), static_cast<long long>(config.train.steps),
                    loss_mean, ce_mean, lr, grad_norm, format_rate(tokens_per_s).c_str());
      log.line(std::string(text) + report.step_tail(progress.step, step_ms) +
               (layers.empty() ? "" : " | f:" + fractions.str()));

      if (config.train.eval_every > 0 &&
          (progress.step % config.train.eval_every == 0 || progress.step == config.train.steps)) {
        if (options.telemetry) options.telemetry->on_phase("eval", progress.step);
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
      if (writer.finished()) DTRN_RETURN_IF_ERROR(join_save());
      if ((config.checkpoint.every > 0 && progress.step % config.checkpoint.every == 0) ||
          progress.step == config.train.steps) {
        if (options.telemetry) options.telemetry->on_phase("checkpoint", progress.step);
        DTRN_RETURN_IF_ERROR(save());
      }
      if (stop.received() != 0 && progress.step < config.train.steps) {
        if (started_step != progress.step) DTRN_RETURN_IF_ERROR(save());
        DTRN_RETURN_IF_ERROR(join_save());
        log.line(report.summary(progress.step, progress.tokens, run_dir + "/checkpoints"));
        return stopped_by_signal(stop.received(), progress.step, saved, run_dir);
      }
      if (options.telemetry) options.telemetry->on_phase("train", progress.step);
    }
    DTRN_RETURN_IF_ERROR(join_save());
  } catch (const Error& e) {
    return Status::Internal(e.what());
  }
  log.line(report.summary(progress.step, progress.tokens, run_dir + "/checkpoints"));
  if (options.telemetry) options.telemetry->on_phase("done", progress.step);
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
