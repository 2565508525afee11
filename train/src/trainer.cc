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
#include "dtrn/parallel/tensor_parallel.h"
#include "dtrn/parallel/zero_optimizer.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/evaluate.h"
#include "async_checkpoint.h"
#include "placement.h"
#include "rank_barrier.h"
#include "resume_policy.h"
#include "run_directory.h"
#include "run_log.h"
#include "run_report.h"
#include "step_sums.h"
#include "stop_signals.h"
#include "tensor_parallel_import.h"

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
    s.layers.push_back({l["layer"], l["f"], l["s"], l["fallback"], l["starved"], l["saturated"], l["p10"],
                        l["p50"], l["p90"], l["b"], l["fallbacks"], l["collapsed"], l.value("f_min", l["f"].get<double>()),
                        l.value("f_max", l["f"].get<double>())});
  }
  return s;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// A sample's share of the step's samples_hash (splitmix64 of its window, 40 bits, so that the sum over a
// batch of fewer than 2^23 samples never overflows).
int64_t sample_hash(uint64_t window) {
  uint64_t z = window + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<int64_t>((z ^ (z >> 31)) >> 24);
}

// A ZeRO-1 rank's optimizer state as checkpoints see it: its own pieces of the moments.
OptimizerState zero_state(parallel::ZeroAdamW& zero) {
  OptimizerState state;
  for (auto& p : zero.state_pieces()) state.pieces.push_back({p.param, p.begin, p.exp_avg, p.exp_avg_sq});
  state.sharded_over_dp = true;
  state.step = zero.step_count();
  return state;
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


// Everything one rank's run holds. Members are in construction order: the model before the gradient
// buckets that hook its parameters, the buckets before the ZeRO optimizer that reads them.
struct Trainer::State {
  State(const JobConfig& c, const TrainRunOptions& o, parallel::ProcessGroups& g)
      : config(c), options(o), groups(g), world(g.world()), dp(g.dp()), config_yaml(to_yaml(c)),
        monitor(c.routing.starvation_threshold, c.routing.starvation_window) {}

  bool lead() const { return dir != nullptr; }  // rank 0: prints, writes metrics.jsonl and checkpoints
  Status open(std::vector<std::string>* skipped, std::vector<std::string>* resume_notes, bool* nothing_to_do);
  void start(const std::vector<std::string>& skipped, const std::vector<std::string>& resume_notes);

  JobConfig config;
  TrainRunOptions options;
  parallel::ProcessGroups& groups;
  parallel::Communicator& world;
  parallel::Communicator& dp;
  std::string config_yaml;
  std::unique_ptr<RunDirectory> dir;  // rank 0 only
  std::string run_dir;                // the same path on every rank
  Placement placement;
  std::string device_note;
  std::string ckpt;  // what a resume continues from

  std::shared_ptr<const data::TokenDataset> train_set, val_set;  // val_set: DP rank 0 only
  std::unique_ptr<parallel::TensorParallelGroup> tp_group;  // the model's TP group; null without TP
  std::unique_ptr<model::DtrnModel> model;
  std::vector<ParamGroupEntry> param_groups;
  AdamWOptions adamw_options;
  bool zero = false;
  std::unique_ptr<parallel::GradientBuckets> buckets;
  std::unique_ptr<parallel::ZeroAdamW> zero_optimizer;
  std::unique_ptr<AdamW> optimizer;  // without ZeRO-1
  TrainProgress progress;
  std::unique_ptr<data::DataLoader> loader;
  std::vector<int32_t> val_tokens;
  double val_bytes_per_token = 0;

  std::unique_ptr<RunLog> log;
  std::ofstream metrics;
  int64_t accum = 1;         // micro-batches per step on this rank
  int64_t global_accum = 1;  // on all ranks together
  int64_t tokens_per_step = 0;
  StarvationMonitor monitor;
  bool headroom_reserved = false;  // device memory headroom, once this process's first step is done
  std::unique_ptr<RunReport> report;
  // Every rank writes its shard of a save in the background (async_checkpoint.h), committed across the
  // ranks through options.commit_barrier when set (the coordinator's), else through `ranks`, whose
  // rounds also tell when every rank's writer has finished. A save is reported once it is joined: at
  // the first step boundary after it finished on every rank (so the coordinator learns of it
  // promptly), at the next save, on a stop and at the end. Joining is collective.
  std::unique_ptr<RankBarrier> ranks;  // multi-rank jobs only
  std::unique_ptr<AsyncCheckpointWriter> writer;
  double blocked_ms = 0;      // how long the save in flight held training up
  int64_t started_step = -1;  // of the newest save started
  std::string saved;          // the newest committed checkpoint
  RankPlace place() const {
    return {{dp.size(), groups.tp_size(), zero ? 1 : 0}, dp.rank(), groups.tp_rank()};
  }
  Status join_save() { return report_save(writer ? writer->wait() : std::nullopt); }
  Status poll_save() { return report_save(writer ? writer->poll() : std::nullopt); }
  Status report_save(std::optional<AsyncCheckpointWriter::Done> done);
};

// A joined save's outcome goes to metrics.jsonl, the log and telemetry (rank 0).
Status Trainer::State::report_save(std::optional<AsyncCheckpointWriter::Done> done) {
  if (!done) return Status::Ok();
  if (!done->dir.ok()) return done->dir.status();
  saved = *done->dir;
  if (!lead()) return Status::Ok();
  metrics << nlohmann::json{{"kind", "checkpoint"}, {"step", done->step}, {"blocked_ms", blocked_ms},
                            {"write_ms", done->write_ms}}.dump()
          << "\n";
  metrics.flush();
  log->line("checkpoint " + *done->dir);
  if (options.telemetry) options.telemetry->on_checkpoint({done->step, blocked_ms, done->write_ms});
  return Status::Ok();
}

// Checks a resume and builds data, model and optimizer; writes nothing.
Status Trainer::State::open(std::vector<std::string>* skipped, std::vector<std::string>* resume_notes,
                            bool* nothing_to_do) {
  if (options.resume) {
    // Rank 0 finds the newest checkpoint that verifies (reading all of it once); the others take its
    // answer and verify what they read of it.
    std::string resolved;
    if (lead()) {
      auto r = resolve_checkpoint(run_dir, skipped);
      for (const std::string& line : *skipped) std::cerr << "dtrn train: --resume: " << line << std::endl;
      resolved = r.ok() ? "ok " + *r : "error " + r.status().message();
    }
    if (world.size() > 1) parallel::broadcast_string(world, &resolved, 0);
    if (resolved.compare(0, 3, "ok ") != 0) return Status::NotFound("--resume: " + resolved.substr(6));
    ckpt = resolved.substr(3);
    auto step = read_checkpoint_step(ckpt);
    if (!step.ok()) return step.status();
    DTRN_RETURN_IF_ERROR(check_resume(ckpt, config, *step, resume_notes));
    if (*step >= config.train.steps) {
      if (lead()) {
        std::cout << "dtrn train: nothing to do: " << ckpt << " is at step " << *step << " of train.steps "
                  << config.train.steps << " (raise it with --set train.steps=N to train on)" << std::endl;
      }
      *nothing_to_do = true;
      return Status::Ok();
    }
  }
  auto placed = rank_placement(config.train, groups.launch(), &device_note);
  if (!placed.ok()) return placed.status();
  placement = *placed;

  // Data.
  auto train = data::TokenDataset::Open(config.data.path, "train");
  if (!train.ok()) return train.status();
  train_set = *train;
  if (config.train.eval_every > 0 && dp.rank() == 0) {
    auto v = data::TokenDataset::Open(config.data.path, "val");
    if (!v.ok()) return v.status();
    val_set = *v;
  }
  const int64_t tokens_vocab = static_cast<int64_t>(train_set->meta().vocab_size);
  if (config.model.vocab_size < tokens_vocab) {
    return Status::InvalidArgument("model.vocab_size: " + std::to_string(config.model.vocab_size) +
                                   " is smaller than the " + std::to_string(tokens_vocab) + " token ids of " +
                                   config.data.path);
  }

  // Model and optimizer: bf16 computes with f32 master weights, moments and gradients. Every rank
  // initialises from the same seed, so the replicas start equal without a broadcast; under tensor
  // parallelism each TP rank holds its slices of those weights (model.h, Note [Tensor-parallel DTRNet]).
  if (groups.tp_size() > 1) tp_group = std::make_unique<parallel::TensorParallelGroup>(groups.tp());
  model = std::make_unique<model::DtrnModel>(config.model, config.routing, placement.device,
                                             placement.compute_dtype, tp_group.get());
  model->init(config.train.seed);
  adamw_options = AdamWOptions{0.9, 0.999, 1e-8, config.train.weight_decay};
  if (!options.init_from.empty() && tp_group) {
    DTRN_RETURN_IF_ERROR(init_from_safetensors_sliced(options.init_from, config.train.seed, model.get()));
  } else if (!options.init_from.empty()) {
    DTRN_RETURN_IF_ERROR(init_from_safetensors(options.init_from, model.get()));
  }
  param_groups = param_group_entries(*model);
  // Data parallelism (parallel/grad_buckets.h): gradients are averaged over the DP group in buckets
  // during the last micro-batch's backward; ZeRO-1 shards the optimizer (parallel/zero_optimizer.h), and
  // then a full-size AdamW exists only while a checkpoint is read or written.
  zero = config.parallel.zero == 1 && dp.size() > 1;
  if (dp.size() > 1) {
    std::vector<std::pair<std::string, Tensor>> leaves;
    for (const auto& p : model->parameters()) leaves.emplace_back(p.name, p.compute);
    parallel::BucketOptions bo;
    bo.bucket_bytes = static_cast<int64_t>(config.parallel.bucket_mb * 1e6);
    bo.shard = zero;
    buckets = std::make_unique<parallel::GradientBuckets>(leaves, dp, bo);
  }
  // The clipping norm counts each TP slice's gradient on its rank and the replicated ones once.
  ShardNormSum tp_norm_sum;
  if (tp_group) {
    tp_norm_sum = [this](const Tensor& sq) { groups.tp().all_reduce(sq, parallel::ReduceOp::kSum); };
  }
  if (zero) {
    zero_optimizer = std::make_unique<parallel::ZeroAdamW>(param_groups, *buckets, adamw_options);
    zero_optimizer->set_shard_norm_sum(tp_norm_sum);
  } else {
    optimizer = std::make_unique<AdamW>(param_groups, adamw_options);
    optimizer->set_shard_norm_sum(tp_norm_sum);
  }

  progress.seed = config.train.seed;
  if (options.resume) {
    // Each rank reads its own parameters and optimizer pieces, whatever layout saved them.
    OptimizerState state = zero ? zero_state(*zero_optimizer) : optimizer_state(*optimizer);
    DTRN_RETURN_IF_ERROR(load_rank_checkpoint(ckpt, model.get(), &state, &progress));
    if (zero) {
      zero_optimizer->set_step_count(state.step);
    } else {
      optimizer->set_step_count(state.step);
    }
    if (progress.seed != config.train.seed) {
      return Status::FailedPrecondition("--resume: " + ckpt + " was trained with seed " + std::to_string(progress.seed) +
                                        ", train.seed is " + std::to_string(config.train.seed));
    }
    monitor.restore(progress.monitor);
    resume_notes->push_back("resumed from " + ckpt + " at step " + std::to_string(progress.step));
  }

  data::LoaderOptions lo;
  lo.seq_len = config.model.seq_len;
  lo.micro_batch = config.train.micro_batch;
  lo.global_batch = config.train.global_batch;
  lo.dp_rank = dp.rank();
  lo.dp_size = dp.size();
  lo.seed = progress.seed;
  auto opened = data::DataLoader::Open(train_set, lo, progress.sampler);
  if (!opened.ok()) return opened.status();
  loader = std::move(*opened);
  if (val_set) {
    val_tokens = val_set->all_tokens();
    if (const auto* s = val_set->meta().split("val")) val_bytes_per_token = s->bytes_per_token();
  }
  accum = config.train.global_batch / (config.train.micro_batch * dp.size());
  global_accum = accum * dp.size();
  tokens_per_step = config.train.global_batch * config.model.seq_len;
  return Status::Ok();
}

// The run starts: from here on the folder is written (by rank 0) and kept.
void Trainer::State::start(const std::vector<std::string>& skipped, const std::vector<std::string>& resume_notes) {
  if (lead()) dir->started();
  log = std::make_unique<RunLog>(lead() ? run_dir + "/train.log" : "/dev/null", options.quiet || !lead());
  log->line("dtrn train: run directory " + run_dir);
  if (lead()) {
    std::vector<std::string> cleaned;
    const Status clean = clean_checkpoints(run_dir, &cleaned);
    for (const std::string& line : cleaned) log->line("checkpoints: " + line);
    if (!clean.ok()) log->line("checkpoints: " + clean.message());
  }
  if (world.size() > 1) ranks = std::make_unique<RankBarrier>(world);
  CommitBarrier* commit = options.commit_barrier ? options.commit_barrier : ranks.get();
  writer = std::make_unique<AsyncCheckpointWriter>(
      run_dir, SaveOptions{config.checkpoint.keep, config.checkpoint.keep_every, nullptr, commit}, ranks.get());
  for (const std::string& line : skipped) log->record("--resume: " + line);
  for (const std::string& note : resume_notes) log->line(note);
  if (!device_note.empty()) log->line(device_note);
  const std::string split = tp_group ? " on each of " + std::to_string(groups.tp_size()) + " TP ranks" : "";
  log->line("model: " + std::to_string(model->parameter_count()) + " parameters" + split + ", layout " +
            model->layout() + ", device " + placement.device.str() + ", " + placement.precision_name());
  if (world.size() > 1) {
    log->line("parallel: " + std::to_string(world.size()) + " ranks (" +
              parallel::launcher_name(groups.launch().launcher) + "), dp " + std::to_string(dp.size()) + ", tp " +
              std::to_string(groups.tp_size()) + (zero ? ", ZeRO-1" : "") + ", " +
              std::to_string(buckets ? buckets->buckets().size() : 0) + " gradient buckets");
  }
  report = std::make_unique<RunReport>(progress.step, config.train.steps);
}

Trainer::Trainer(std::unique_ptr<State> state) : s_(std::move(state)) {}
Trainer::~Trainer() = default;

StatusOr<std::unique_ptr<Trainer>> Trainer::Open(const JobConfig& config, const TrainRunOptions& options,
                                                 parallel::ProcessGroups& groups) {
  if (options.resume && !options.init_from.empty()) {
    return Status::InvalidArgument("--resume and --init-from: --resume continues the run's checkpoint, "
                                   "--init-from starts a new run from weights; give one");
  }
  if (const CommitBarrier* b = options.commit_barrier;
      b && (b->rank() != groups.world().rank() || b->world() != groups.world().size())) {
    return Status::InvalidArgument("the commit barrier is rank " + std::to_string(b->rank()) + " of " +
                                   std::to_string(b->world()) + ", this process rank " +
                                   std::to_string(groups.world().rank()) + " of " +
                                   std::to_string(groups.world().size()));
  }
  auto s = std::make_unique<State>(config, options, groups);
  // Rank 0 holds the run directory; the others learn its path from it.
  s->run_dir = options.run_dir.empty() ? default_run_dir() : options.run_dir;
  Status opened = Status::Ok();
  if (s->world.rank() == 0) {
    auto d = RunDirectory::Open(s->run_dir, options.resume);
    if (d.ok()) s->dir = std::move(*d);
    opened = d.status();
  }
  DTRN_RETURN_IF_ERROR(agree(s->world, opened, "to open the run directory"));
  if (s->world.size() > 1) parallel::broadcast_string(s->world, &s->run_dir, 0);

  std::vector<std::string> skipped, resume_notes;  // logged once the run starts
  bool nothing_to_do = false;
  Status set_up = Status::Ok();
  try {
    set_up = s->open(&skipped, &resume_notes, &nothing_to_do);
  } catch (const Error& e) {
    set_up = Status::Internal(e.what());
  }
  DTRN_RETURN_IF_ERROR(agree(s->world, set_up, "before the run started"));
  // Nothing to do: the Trainer is finished() at once and writes nothing.
  if (nothing_to_do) {
    s->progress.step = config.train.steps;
    return std::unique_ptr<Trainer>(new Trainer(std::move(s)));
  }
  s->start(skipped, resume_notes);
  Status written = Status::Ok();
  if (s->lead()) {
    written = write_file_atomic(s->run_dir + "/config.yaml", s->config_yaml);
    if (written.ok() && options.resume) {
      written = truncate_metrics(s->run_dir + "/metrics.jsonl", s->progress.step);
    } else if (written.ok()) {
      std::ofstream(s->run_dir + "/metrics.jsonl", std::ios::trunc);
    }
    if (written.ok()) s->metrics.open(s->run_dir + "/metrics.jsonl", std::ios::app);
    if (!written.ok()) RunLog::failure(s->run_dir + "/train.log", written.message());  // the run had started
  }
  DTRN_RETURN_IF_ERROR(agree(s->world, written, "to write the run directory"));
  return std::unique_ptr<Trainer>(new Trainer(std::move(s)));
}

const std::string& Trainer::run_dir() const { return s_->run_dir; }
int64_t Trainer::step() const { return s_->progress.step; }
bool Trainer::finished() const { return s_->progress.step >= s_->config.train.steps; }

StatusOr<StepStats> Trainer::train_step() {
  State& s = *s_;
  const JobConfig& config = s.config;
  const int64_t step = s.progress.step;
  const auto t0 = std::chrono::steady_clock::now();
  const double lr = lr_at(step, config.train.warmup_steps, config.train.steps, config.train.lr, config.train.min_lr);
  // Per-step sums stay on the device until the step ends: one read per step, not per micro-batch.
  StepSums sums;
  std::vector<LayerSums> layers;
  // Sets the threshold biases from the first micro-batch, then takes DP rank 0's: rank 0's first
  // micro-batch is the global batch's first, the one a single process starts from, so every rank routes
  // with the same b_l as one process would from the first step on.
  auto init_router_bias = [&s](const Tensor& ids) {
    s.model->init_router_bias(ids);
    model::RouterState state = s.model->router_state();
    if (s.dp.size() == 1 || state.bias.empty()) return;
    Tensor b = Tensor::from_vector(state.bias, {static_cast<int64_t>(state.bias.size())}, DType::kF64);
    s.dp.broadcast(b, 0);
    state.bias = b.to_vector();
    s.model->set_router_state(state);
  };
  // Which samples the step read, whatever the DP layout (a sum, so the ranks' shares add up): a resumed
  // run must read exactly the samples the uninterrupted one did.
  int64_t samples_hash = 0;
  for (int64_t micro = 0; micro < s.accum; ++micro) {
    data::Batch batch = s.loader->next();
    for (uint64_t w : batch.windows) samples_hash += sample_hash(w);
    Tensor ids = host_tokens(batch.inputs, batch.B, batch.T);
    Tensor targets = host_tokens(batch.targets, batch.B, batch.T);
    // The threshold bias starts from the first batch (router_control.h); a resumed run has its state.
    if (config.routing.bias_enabled() && !s.model->router_state().initialized) init_router_bias(ids);
    model::ForwardOptions fo;
    fo.training = true;
    fo.seed = config.train.seed;
    // The micro-batch's place in the global batch (the loader gives DP rank r the r-th slice), so the
    // starvation fallback draws the same positions for it whatever the DP degree.
    fo.draw = static_cast<uint64_t>(step * s.global_accum + s.dp.rank() * s.accum + micro);
    fo.loss_grad = 1.0 / static_cast<double>(s.accum);  // what the backward below sends the loss
    model::ForwardResult r = s.model->forward(ids, targets, fo);
    if (s.buckets && micro == s.accum - 1) s.buckets->arm();
    // Every term is averaged over micro-batches like CE, so lambda's strength does not depend on the
    // accumulation count (dtrnet-spec.md, Loss); the buckets average over ranks the same way.
    scale(r.loss, fo.loss_grad).backward();
    sums.add(r, s.accum, &layers);
  }
  if (s.buckets) s.buckets->finish();
  Tensor grad_norm_sq;
  if (s.zero) {
    grad_norm_sq = s.zero_optimizer->clip_and_step(lr, config.train.clip);
    s.zero_optimizer->zero_grad();
  } else {
    grad_norm_sq = s.optimizer->clip_and_step(lr, config.train.clip);
    s.optimizer->zero_grad();
  }
  StepSums::Values v = sums.read(grad_norm_sq, &layers);
  const std::vector<LayerSpread> spread = reduce_step_over_dp(s.dp, &v, &layers);
  if (s.dp.size() > 1) {
    Tensor h = Tensor::from_ints({samples_hash}, {1}, DType::kI64);
    s.dp.all_reduce(h, parallel::ReduceOp::kSum);
    samples_hash = h.to_ints()[0];
  }
  // The bias this step routed with, then the controls' once-per-step update from the DP group's means
  // (every rank holds the same values, so the ranks' states stay identical).
  const model::RouterState used = s.model->router_state();
  std::vector<model::LayerMeasure> measured;
  for (const auto& l : layers) measured.push_back({l.f, l.quantile_values[model::kMeasuredQuantiles - 1]});
  model::RouterState next = used;
  model::update_router_state(config.routing, measured, nullptr, &next);
  s.model->set_router_state(next);
  if (!s.headroom_reserved) {
    reserve_device_memory_headroom(s.placement.device);  // the first step's peak is known now
    s.headroom_reserved = true;
  }
  s.progress.step = step + 1;
  s.progress.tokens += s.tokens_per_step;
  s.progress.samples += config.train.global_batch;
  const double step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const double tokens_per_s = static_cast<double>(s.tokens_per_step) / (step_ms / 1e3);

  nlohmann::json line = {{"kind", "train"},
                         {"step", s.progress.step},
                         {"loss", v.loss},
                         {"ce", v.ce},
                         {"routing_sparsity", v.sparsity},
                         {"routing_balance", v.balance},
                         {"routing_lagrangian", v.lagrangian},
                         {"routing_z_loss", v.z_loss},
                         {"lr", lr},
                         {"grad_norm", v.grad_norm},
                         {"tokens", s.progress.tokens},
                         {"samples_hash", samples_hash},
                         {"tokens_per_s", tokens_per_s},
                         {"step_ms", step_ms}};
  nlohmann::json jl = nlohmann::json::array();
  std::ostringstream fractions;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    const auto verdict = s.monitor.observe(l.layer, l.f, l.fallbacks > 0);
    const std::vector<double>& q = l.quantile_values;
    nlohmann::json entry = {{"layer", l.layer}, {"f", l.f}, {"s", l.s_value}, {"fallback", l.fallbacks > 0},
                            {"starved", verdict.starved}, {"saturated", verdict.saturated}, {"p10", sigmoid(q[0])},
                            {"p50", sigmoid(q[1])}, {"p90", sigmoid(q[2])},
                            {"b", used.initialized && config.routing.bias_enabled() ? used.bias[i] : 0.0},
                            {"fallbacks", l.fallbacks}, {"collapsed", l.collapsed}};
    if (config.routing.balance_multiplier_lr > 0) {
      entry["mu"] = i < used.multiplier.size() ? used.multiplier[i] : 0.0;  // empty before the first update
    }
    if (s.dp.size() > 1) {
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
  StepStats stats = step_stats(line);
  stats.ranks = s.world.size();
  if (s.options.telemetry && s.lead()) s.options.telemetry->on_step(stats);
  if (s.lead()) {
    s.metrics << line.dump() << "\n";
    s.metrics.flush();
  }
  char text[256];
  std::snprintf(text, sizeof text, "step %lld/%lld | loss %.4f | ce %.4f | lr %.2e | gnorm %.2f | %s tok/s |",
                static_cast<long long>(s.progress.step), static_cast<long long>(config.train.steps), v.loss, v.ce,
                lr, v.grad_norm, format_rate(tokens_per_s).c_str());
  s.log->line(std::string(text) + s.report->step_tail(s.progress.step, step_ms) +
              (layers.empty() ? "" : " | f:" + fractions.str()));
  return stats;
}

Status Trainer::validate() {
  State& s = *s_;
  // DP rank 0 alone, all of its TP group (the model's forward is theirs together); the other DP ranks go
  // on to the next step's first collective and wait there. Rank 0 reports.
  if (s.dp.rank() != 0 || !s.val_set) return Status::Ok();
  if (s.lead() && s.options.telemetry) s.options.telemetry->on_phase("eval", s.progress.step);
  EvalResult e = evaluate_tokens(*s.model, s.val_tokens, s.config.train.micro_batch, s.config.train.eval_batches,
                                 s.val_bytes_per_token);
  if (!s.lead()) return Status::Ok();
  nlohmann::json v = {{"kind", "val"}, {"step", s.progress.step}, {"loss", e.loss}, {"ppl", e.ppl},
                      {"bits_per_byte", e.bits_per_byte}, {"tokens", e.tokens}};
  s.metrics << v.dump() << "\n";
  s.metrics.flush();
  char text[256];
  std::snprintf(text, sizeof text, "val step %lld | loss %.4f | ppl %.2f | bpb %.4f | %lld tokens",
                static_cast<long long>(s.progress.step), e.loss, e.ppl, e.bits_per_byte,
                static_cast<long long>(e.tokens));
  s.log->line(text);
  s.report->validation(s.progress.step, e.loss);
  return Status::Ok();
}

Status Trainer::save() {
  State& s = *s_;
  if (s.options.telemetry) s.options.telemetry->on_phase("checkpoint", s.progress.step);
  const auto t0 = std::chrono::steady_clock::now();
  Status status = s.join_save();  // at most one save in flight
  s.progress.sampler = s.loader->state();
  s.progress.monitor = s.monitor.runs();
  // Every rank copies what it saves (rank_slices.h): ZeRO-1 moments as they are sharded, no gather.
  const OptimizerState state = s.zero ? zero_state(*s.zero_optimizer) : optimizer_state(*s.optimizer);
  auto snapshot = snapshot_checkpoint(*s.model, state, s.place(), s.progress, s.config_yaml);
  if (status.ok()) status = snapshot.status();
  DTRN_RETURN_IF_ERROR(agree(s.world, status, "to save the checkpoint"));
  s.writer->start(std::move(*snapshot), s.progress.step);
  s.started_step = s.progress.step;
  s.blocked_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return Status::Ok();
}

StatusOr<std::string> Trainer::run(const std::function<int()>& stop_signal) {
  State& s = *s_;
  if (finished()) return s.run_dir;  // nothing to do (Open said why)
  const JobConfig& config = s.config;
  // Whether any rank was asked to stop (a signal, the coordinator): all ranks stop after the same step.
  auto agreed = [&](bool local) {
    if (s.world.size() == 1) return local;
    Tensor flag = Tensor::full({1}, local ? 1.0 : 0.0, DType::kI32);
    s.world.all_reduce(flag, parallel::ReduceOp::kMax);
    return flag.to_ints()[0] != 0;
  };
  if (s.options.telemetry) s.options.telemetry->on_phase("train", s.progress.step);
  try {
    while (!finished()) {
      if (agreed(s.options.telemetry && s.options.telemetry->stop_requested())) {
        s.log->line("stopped at step " + std::to_string(s.progress.step) + " on request");
        break;
      }
      auto stats = train_step();
      if (!stats.ok()) return stats.status();
      const int64_t step = s.progress.step;
      if (config.train.eval_every > 0 && (step % config.train.eval_every == 0 || step == config.train.steps)) {
        DTRN_RETURN_IF_ERROR(validate());
      }
      // Collective: every rank serves the save's commit and joins it at the same step. The commit's
      // outcome is every rank's; a failed pruning is rank 0's alone, and the others learn of the lost rank
      // in their next collective.
      DTRN_RETURN_IF_ERROR(s.poll_save());
      if ((config.checkpoint.every > 0 && step % config.checkpoint.every == 0) || step == config.train.steps) {
        DTRN_RETURN_IF_ERROR(save());
      }
      const int signal = stop_signal();
      if (step < config.train.steps && agreed(signal != 0)) {
        if (s.started_step != step) DTRN_RETURN_IF_ERROR(save());
        DTRN_RETURN_IF_ERROR(agree(s.world, s.join_save(), "to save the checkpoint"));
        s.log->line(s.report->summary(step, s.progress.tokens, s.run_dir + "/checkpoints"));
        return stopped_by_signal(signal != 0 ? signal : SIGTERM, step, s.saved, s.run_dir);
      }
      if (s.options.telemetry) s.options.telemetry->on_phase("train", step);
    }
    DTRN_RETURN_IF_ERROR(agree(s.world, s.join_save(), "to save the checkpoint"));
  } catch (const Error& e) {
    return Status::Internal(e.what());
  }
  s.log->line(s.report->summary(s.progress.step, s.progress.tokens, s.run_dir + "/checkpoints"));
  if (s.options.telemetry) s.options.telemetry->on_phase("done", s.progress.step);
  return s.run_dir;
}

StatusOr<std::string> run_training(const JobConfig& config, const TrainRunOptions& options) {
  auto launch = parallel::read_launch_env();
  if (!launch.ok()) return launch.status();
  std::string device_note;
  auto placement = rank_placement(config.train, *launch, &device_note);
  if (!placement.ok()) return placement.status();
  parallel::ParallelOptions po;
  po.dp = static_cast<int>(config.parallel.dp);
  po.tp = static_cast<int>(config.parallel.tp);
  po.device = placement->device;
  po.timeout_s = config.parallel.timeout_s;
  auto groups = parallel::ProcessGroups::Join(po);
  if (!groups.ok()) return groups.status();

  StopSignals stop;  // before the set-up, so that a signal during it still ends the run cleanly
  auto trainer = Trainer::Open(config, options, **groups);
  if (!trainer.ok()) return trainer.status();
  auto run = (*trainer)->run([&stop] { return stop.received(); });
  if (!run.ok() && run.status().code() != StatusCode::kCancelled && (*groups)->rank() == 0) {
    RunLog::failure((*trainer)->run_dir() + "/train.log", run.status().message());
  }
  return run;
}

}  // namespace dtrn::train
