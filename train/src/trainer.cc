#include "dtrn/train/trainer.h"

#include <chrono>
#include <csignal>
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
#include "dtrn/parallel/grad_buckets.h"
#include "dtrn/parallel/process_groups.h"
#include "dtrn/parallel/zero_optimizer.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/evaluate.h"
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

// Every rank learns whether any rank failed at this point (a collective over the world), so that one
// rank's refusal ends all of them instead of leaving the others in their next collective.
Status agree(parallel::Communicator& world, const Status& local, const std::string& stage) {
  if (world.size() == 1) return local;
  Tensor failed = Tensor::full({1}, local.ok() ? 0.0 : 1.0, DType::kI32);
  world.all_reduce(failed, parallel::ReduceOp::kMax);
  if (!local.ok()) return local;
  if (failed.to_ints()[0] != 0) return Status::FailedPrecondition("another rank failed " + stage + " (its error is above)");
  return Status::Ok();
}

// The step's figures over the DP group: the loss terms and each layer's f and s averaged (each rank's are
// means over its micro-batches of one size, so the average is the global batch's mean), the fallback flag
// or-ed, and each layer's f also as its minimum and maximum over ranks.
struct LayerSpread {
  double f_min = 0, f_max = 0;
};
std::vector<LayerSpread> reduce_step_over_dp(parallel::Communicator& dp, StepSums::Values* v,
                                             std::vector<model::LayerRouting>* layers) {
  const size_t n = layers->size();
  std::vector<LayerSpread> spread(n);
  for (size_t i = 0; i < n; ++i) spread[i] = {(*layers)[i].f, (*layers)[i].f};
  if (dp.size() == 1) return spread;
  std::vector<double> avg = {v->loss, v->ce, v->sparsity, v->balance};
  std::vector<double> max;  // f, -f, fallback per layer: min is max of -f
  for (const auto& l : *layers) {
    avg.push_back(l.f);
    avg.push_back(l.s.item());
    max.insert(max.end(), {l.f, -l.f, l.fallback ? 1.0 : 0.0});
  }
  Tensor a = Tensor::from_vector(avg, {static_cast<int64_t>(avg.size())}, DType::kF64);
  Tensor m = Tensor::from_vector(max, {static_cast<int64_t>(max.size())}, DType::kF64);
  dp.all_reduce(a, parallel::ReduceOp::kAvg);
  if (n > 0) dp.all_reduce(m, parallel::ReduceOp::kMax);
  avg = a.to_vector();
  max = m.to_vector();
  v->loss = avg[0];
  v->ce = avg[1];
  v->sparsity = avg[2];
  v->balance = avg[3];
  for (size_t i = 0; i < n; ++i) {
    (*layers)[i].f = avg[4 + 2 * i];
    (*layers)[i].s = Tensor::full({}, avg[5 + 2 * i], DType::kF64);
    (*layers)[i].fallback = max[3 * i + 2] > 0;
    spread[i] = {-max[3 * i + 1], max[3 * i]};
  }
  return spread;
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

// What one rank of the job works with: its groups, and (rank 0 only) the run directory it holds.
struct RankContext {
  parallel::ProcessGroups& groups;
  RunDirectory* dir;    // null on every rank but 0
  std::string run_dir;  // the same path on every rank
  Placement placement;
  std::string device_note;
  bool lead() const { return dir != nullptr; }  // prints, writes metrics.jsonl and checkpoints
};

// The run in ctx.run_dir (opened by run_training). Nothing is written into the folder until every check
// has passed and the run starts (dir.started()), so that a refused start changes nothing.
static StatusOr<std::string> train_in(const JobConfig& config, const TrainRunOptions& options, RankContext& ctx,
                                      const StopSignals& stop) {
  const std::string& run_dir = ctx.run_dir;
  parallel::Communicator& world = ctx.groups.world();
  parallel::Communicator& dp = ctx.groups.dp();
  const std::string config_yaml = to_yaml(config);
  // What a resume continues from, checked before anything else is opened.
  std::string ckpt;
  std::vector<std::string> skipped, resume_notes;  // logged once the run starts
  if (options.resume) {
    auto resolved_ckpt = resolve_checkpoint(run_dir, &skipped);
    if (ctx.lead()) {
      for (const std::string& line : skipped) std::cerr << "dtrn train: --resume: " << line << std::endl;
    }
    if (!resolved_ckpt.ok()) return Status::NotFound("--resume: " + resolved_ckpt.status().message());
    ckpt = *resolved_ckpt;
    auto step = read_checkpoint_step(ckpt);
    if (!step.ok()) return step.status();
    DTRN_RETURN_IF_ERROR(check_resume(ckpt, config, *step, &resume_notes));
    if (*step >= config.train.steps) {
      if (ctx.lead()) {
        std::cout << "dtrn train: nothing to do: " << ckpt << " is at step " << *step << " of train.steps "
                  << config.train.steps << " (raise it with --set train.steps=N to train on)" << std::endl;
      }
      return run_dir;
    }
  }

  const Device device = ctx.placement.device;
  const std::string precision = ctx.placement.precision_name();

  // Data.
  auto train_set = data::TokenDataset::Open(config.data.path, "train");
  if (!train_set.ok()) return train_set.status();
  std::shared_ptr<const data::TokenDataset> val_set;
  if (config.train.eval_every > 0 && ctx.lead()) {
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

  // Model and optimizer: bf16 computes with f32 master weights, moments and gradients. Every rank
  // initialises from the same seed, so the replicas start equal without a broadcast.
  model::DtrnModel model(config.model, config.routing, device, ctx.placement.compute_dtype);
  model.init(config.train.seed);
  if (!options.init_from.empty()) DTRN_RETURN_IF_ERROR(init_from_safetensors(options.init_from, &model));
  std::vector<ParamGroupEntry> groups;
  for (const auto& p : model.parameters()) groups.push_back({p.name, p.tensor, p.decay, p.compute});
  const AdamWOptions adamw_options{0.9, 0.999, 1e-8, config.train.weight_decay};
  // Data parallelism (parallel/grad_buckets.h): gradients are averaged over the DP group in buckets
  // during the last micro-batch's backward; ZeRO-1 shards the optimizer (parallel/zero_optimizer.h) and
  // then the full-size AdamW below exists only while a checkpoint is read or written.
  const bool zero = config.parallel.zero == 1 && dp.size() > 1;
  std::unique_ptr<parallel::GradientBuckets> buckets;
  std::unique_ptr<parallel::ZeroAdamW> zero_optimizer;
  std::unique_ptr<AdamW> optimizer;
  if (dp.size() > 1) {
    std::vector<std::pair<std::string, Tensor>> leaves;
    for (const auto& p : model.parameters()) leaves.emplace_back(p.name, p.compute);
    parallel::BucketOptions bo;
    bo.bucket_bytes = static_cast<int64_t>(config.parallel.bucket_mb * 1e6);
    bo.shard = zero;
    buckets = std::make_unique<parallel::GradientBuckets>(leaves, dp, bo);
  }
  if (zero) {
    zero_optimizer = std::make_unique<parallel::ZeroAdamW>(groups, *buckets, adamw_options);
  } else {
    optimizer = std::make_unique<AdamW>(groups, adamw_options);
  }

  TrainProgress progress;
  progress.seed = config.train.seed;
  if (options.resume) {
    if (zero) {
      AdamW full(groups, adamw_options);
      DTRN_RETURN_IF_ERROR(load_checkpoint(ckpt, &model, &full, &progress));
      zero_optimizer->scatter_state(full);
    } else {
      DTRN_RETURN_IF_ERROR(load_checkpoint(ckpt, &model, optimizer.get(), &progress));
    }
    resume_notes.push_back("resumed from " + ckpt + " at step " + std::to_string(progress.step));
  }

  data::LoaderOptions lo;
  lo.seq_len = config.model.seq_len;
  lo.micro_batch = config.train.micro_batch;
  lo.global_batch = config.train.global_batch;
  lo.dp_rank = dp.rank();
  lo.dp_size = dp.size();
  lo.seed = config.train.seed;
  auto loader = data::DataLoader::Open(*train_set, lo, progress.sampler);
  if (!loader.ok()) return loader.status();
  std::vector<int32_t> val_tokens;
  double val_bytes_per_token = 0;
  if (val_set) {
    val_tokens = val_set->all_tokens();
    if (const auto* s = val_set->meta().split("val")) val_bytes_per_token = s->bytes_per_token();
  }
  DTRN_RETURN_IF_ERROR(agree(world, Status::Ok(), "before the run started"));

  // The run starts: from here on the folder is written (by rank 0) and kept.
  if (ctx.lead()) ctx.dir->started();
  RunLog log(ctx.lead() ? run_dir + "/train.log" : "/dev/null", options.quiet || !ctx.lead());
  std::ofstream metrics;
  if (ctx.lead()) {
    DTRN_RETURN_IF_ERROR(write_file_atomic(run_dir + "/config.yaml", config_yaml));
    if (options.resume) {
      DTRN_RETURN_IF_ERROR(truncate_metrics(run_dir + "/metrics.jsonl", progress.step));
    } else {
      std::ofstream(run_dir + "/metrics.jsonl", std::ios::trunc);
    }
    metrics.open(run_dir + "/metrics.jsonl", std::ios::app);
  }
  log.line("dtrn train: run directory " + run_dir);
  for (const std::string& line : skipped) log.record("--resume: " + line);
  for (const std::string& note : resume_notes) log.line(note);
  if (!ctx.device_note.empty()) log.line(ctx.device_note);
  log.line("model: " + std::to_string(model.parameter_count()) + " parameters, layout " + model.layout() +
           ", device " + device.str() + ", " + precision);
  if (world.size() > 1) {
    log.line("parallel: " + std::to_string(world.size()) + " ranks (" +
             parallel::launcher_name(ctx.groups.launch().launcher) + "), dp " + std::to_string(dp.size()) +
             ", tp " + std::to_string(ctx.groups.tp_size()) + (zero ? ", ZeRO-1" : "") + ", " +
             (buckets ? std::to_string(buckets->buckets().size()) + " gradient buckets" : ""));
  }

  // Micro-batches per step on this rank; the global count numbers the fallback's draws (below).
  const int64_t accum = config.train.global_batch / (config.train.micro_batch * dp.size());
  const int64_t global_accum = accum * dp.size();
  const int64_t tokens_per_step = config.train.global_batch * config.model.seq_len;
  StarvationMonitor monitor(config.routing.starvation_threshold, config.routing.starvation_window);
  RunReport report(progress.step, config.train.steps);
  std::string saved;  // the newest checkpoint this process wrote
  int64_t saved_step = -1;
  auto save = [&]() -> Status {
    progress.sampler = (*loader)->state();
    StatusOr<std::string> path = std::string();
    if (zero) {
      AdamW full(groups, adamw_options);
      zero_optimizer->gather_state(&full);  // a collective: every rank takes part
      if (ctx.lead()) path = save_checkpoint(run_dir, model, full, progress, config_yaml, config.checkpoint.keep);
    } else if (ctx.lead()) {
      path = save_checkpoint(run_dir, model, *optimizer, progress, config_yaml, config.checkpoint.keep);
    }
    DTRN_RETURN_IF_ERROR(agree(world, path.status(), "to save the checkpoint"));
    if (ctx.lead()) log.line("checkpoint " + *path);
    saved = ctx.lead() ? *path : run_dir + "/checkpoints";
    saved_step = progress.step;
    if (options.telemetry) options.telemetry->on_checkpoint(progress.step);
    return Status::Ok();
  };
  // Whether any rank was asked to stop (a signal, the coordinator): all ranks stop after the same step.
  auto stop_agreed = [&](bool local) {
    if (world.size() == 1) return local;
    Tensor flag = Tensor::full({1}, local ? 1.0 : 0.0, DType::kI32);
    world.all_reduce(flag, parallel::ReduceOp::kMax);
    return flag.to_ints()[0] != 0;
  };

  if (options.telemetry) options.telemetry->on_phase("train", progress.step);
  try {
    for (int64_t step = progress.step; step < config.train.steps; ++step) {
      if (stop_agreed(options.telemetry && options.telemetry->stop_requested())) {
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
        // The micro-batch's place in the global batch (the loader gives DP rank r the r-th slice), so the
        // starvation fallback draws the same positions for it whatever the DP degree.
        fo.draw = static_cast<uint64_t>(step * global_accum + dp.rank() * accum + micro);
        model::ForwardResult r = model.forward(ids, targets, fo);
        if (buckets && micro == accum - 1) buckets->arm();
        // Every term is averaged over micro-batches like CE, so lambda's strength does not depend on the
        // accumulation count (dtrnet-spec.md, Loss); the buckets average over ranks the same way.
        scale(r.loss, 1.0 / static_cast<double>(accum)).backward();
        sums.add(r, accum, &layers);
      }
      if (buckets) buckets->finish();
      Tensor grad_norm_sq;
      if (zero) {
        grad_norm_sq = zero_optimizer->clip_and_step(lr, config.train.clip);
        zero_optimizer->zero_grad();
      } else {
        grad_norm_sq = optimizer->clip_and_step(lr, config.train.clip);
        optimizer->zero_grad();
      }
      StepSums::Values v = sums.read(grad_norm_sq, &layers);
      const std::vector<LayerSpread> spread = reduce_step_over_dp(dp, &v, &layers);
      const double loss_mean = v.loss, ce_mean = v.ce, grad_norm = v.grad_norm;
      progress.step = step + 1;
      progress.tokens += tokens_per_step;
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
      for (size_t i = 0; i < layers.size(); ++i) {
        const auto& l = layers[i];
        const auto verdict = monitor.observe(l.layer, l.f, l.fallback);
        nlohmann::json entry = {{"layer", l.layer}, {"f", l.f}, {"s", l.s.item()}, {"fallback", l.fallback},
                                {"starved", verdict.starved}, {"saturated", verdict.saturated}};
        if (dp.size() > 1) {
          entry["f_min"] = spread[i].f_min;
          entry["f_max"] = spread[i].f_max;
        }
        jl.push_back(entry);
        char buf[48];
        std::snprintf(buf, sizeof buf, " L%lld %.2f%s", static_cast<long long>(l.layer), l.f,
                      verdict.starved ? "!starved" : (verdict.saturated ? "!saturated" : ""));
        fractions << buf;
      }
      line["layers"] = jl;
      if (options.telemetry) options.telemetry->on_step(step_stats(line));
      if (ctx.lead()) {
        metrics << line.dump() << "\n";
        metrics.flush();
      }
      char text[256];
      std::snprintf(text, sizeof text, "step %lld/%lld | loss %.4f | ce %.4f | lr %.2e | gnorm %.2f | %s tok/s |",
                    static_cast<long long>(progress.step), static_cast<long long>(config.train.steps),
                    loss_mean, ce_mean, lr, grad_norm, format_rate(tokens_per_s).c_str());
      log.line(std::string(text) + report.step_tail(progress.step, step_ms) +
               (layers.empty() ? "" : " | f:" + fractions.str()));

      // Validation runs on rank 0 alone (the others go on to the next step's first collective and wait).
      if (ctx.lead() && config.train.eval_every > 0 &&
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
      if ((config.checkpoint.every > 0 && progress.step % config.checkpoint.every == 0) ||
          progress.step == config.train.steps) {
        if (options.telemetry) options.telemetry->on_phase("checkpoint", progress.step);
        DTRN_RETURN_IF_ERROR(save());
      }
      if (progress.step < config.train.steps && stop_agreed(stop.received() != 0)) {
        if (saved_step != progress.step) DTRN_RETURN_IF_ERROR(save());
        log.line(report.summary(progress.step, progress.tokens, run_dir + "/checkpoints"));
        return stopped_by_signal(stop.received() != 0 ? stop.received() : SIGTERM, progress.step, saved, run_dir);
      }
      if (options.telemetry) options.telemetry->on_phase("train", progress.step);
    }
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
  if (config.parallel.tp != 1) {
    return Status::InvalidArgument("parallel.tp: " + std::to_string(config.parallel.tp) +
                                   ": tensor parallelism is not implemented yet; use parallel.dp");
  }
  auto launch = parallel::read_launch_env();
  if (!launch.ok()) return launch.status();
  std::string device_note;
  auto placement = resolve_placement(config.train, &device_note);
  if (!placement.ok()) return placement.status();
  // One GPU per rank: a rank takes the GPU of its local rank unless train.device named one.
  if (placement->device.is_cuda() && launch->world_size > 1 && config.train.device.find(':') == std::string::npos) {
    placement->device = Device::cuda(launch->local_rank % cuda_device_count());
  }
  parallel::ParallelOptions po;
  po.dp = static_cast<int>(config.parallel.dp);
  po.tp = static_cast<int>(config.parallel.tp);
  po.device = placement->device;
  po.timeout_s = config.parallel.timeout_s;
  auto groups = parallel::ProcessGroups::Join(po);
  if (!groups.ok()) return groups.status();
  parallel::Communicator& world = (*groups)->world();

  // Rank 0 holds the run directory; the others learn its path from it.
  std::unique_ptr<RunDirectory> dir;
  std::string run_dir = options.run_dir.empty() ? default_run_dir() : options.run_dir;
  Status opened = Status::Ok();
  if (world.rank() == 0) {
    auto d = RunDirectory::Open(run_dir, options.resume);
    if (d.ok()) dir = std::move(*d);
    opened = d.status();
  }
  DTRN_RETURN_IF_ERROR(agree(world, opened, "to open the run directory"));
  if (world.size() > 1) parallel::broadcast_string(world, &run_dir, 0);

  RankContext ctx{**groups, dir.get(), run_dir, *placement, device_note};
  StopSignals stop;
  auto run = train_in(config, options, ctx, stop);
  if (!run.ok() && run.status().code() != StatusCode::kCancelled && dir && dir->is_started()) {
    RunLog::failure(dir->path() + "/train.log", run.status().message());
  }
  return run;
}

}  // namespace dtrn::train
