// Saving, verifying and loading checkpoints: each rank's share of the state as named slices
// (rank_slices.h), committed through checkpoint_commit.h, read back through reshard.h.
#include "dtrn/train/checkpoint.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "checkpoint_commit.h"
#include "checkpoint_format.h"
#include "checkpoint_read.h"
#include "dtrn/train/commit_barrier.h"
#include "dtrn/runtime/autograd.h"
#include "env.h"
#include "file_io.h"
#include "rank_slices.h"
#include "reshard.h"
#include "retention.h"

namespace dtrn::train {

struct CheckpointSnapshot {
  Manifest manifest;
  std::vector<TensorSlice> slices;
};

namespace {

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }
bool is_moment(const std::string& name) {
  auto ends = [&](const std::string& s) {
    return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".exp_avg") || ends(".exp_avg_sq");
}

std::string model_config_json(const model::ModelConfig& c) {
  nlohmann::ordered_json j = {{"d_model", c.d_model},       {"n_layers", c.n_layers},
                              {"n_heads", c.n_heads},       {"n_kv_heads", c.n_kv_heads},
                              {"d_ff", c.d_ff},             {"vocab_size", c.vocab_size},
                              {"padded_vocab", c.padded_vocab()}, {"seq_len", c.seq_len},
                              {"norm_eps", c.norm_eps},     {"rope_theta", c.rope_theta}};
  return j.dump();
}

// The model's slices of every shard of a checkpoint, verified; the optimizer moments are not read.
StatusOr<std::vector<TensorSlice>> read_model_slices(const std::string& dir, const Manifest& m) {
  std::vector<TensorSlice> all;
  auto model_tensor = [](const std::string& name, const std::vector<int64_t>&, const Shape&) { return !is_moment(name); };
  for (const ShardEntry& e : m.shards) {
    auto slices = read_shard(dir, e, model_tensor);
    if (!slices.ok()) return slices.status();
    for (TensorSlice& s : *slices) all.push_back(std::move(s));
  }
  return all;
}

// A whole-tensor request into a fresh host tensor.
SliceRequest whole_request(const std::string& name, const Shape& shape) {
  return {name, shape, std::vector<int64_t>(shape.size(), 0), Tensor::empty(shape, DType::kF32, Device::cpu())};
}

}  // namespace

OptimizerState optimizer_state(AdamW& optimizer) {
  OptimizerState state;
  for (size_t i = 0; i < optimizer.params().size(); ++i) {
    state.pieces.push_back({optimizer.params()[i].name, 0, optimizer.exp_avg()[i], optimizer.exp_avg_sq()[i]});
  }
  state.step = optimizer.step_count();
  return state;
}

StatusOr<std::shared_ptr<const CheckpointSnapshot>> snapshot_checkpoint(const model::DtrnModel& model,
                                                                      const OptimizerState& optimizer,
                                                                      const RankPlace& place,
                                                                      const TrainProgress& progress,
                                                                      const std::string& config_yaml) {
  if (progress.step < 0) return Status::InvalidArgument("checkpoint: negative step " + std::to_string(progress.step));
  auto snap = std::make_shared<CheckpointSnapshot>();
  Manifest& m = snap->manifest;
  m.progress = progress;
  m.optimizer_step = optimizer.step;
  m.layout = place.layout;
  m.config_yaml = config_yaml;
  m.model_metadata = {{"dtrn.model", model_config_json(model.config())}, {"dtrn.layout", model.layout()}};
  // The threshold biases travel with the weights into exports: a model trained with them routes by
  // them. The manifest's "routing" is what a resume reads.
  m.router = model.router_state();
  if (m.router.initialized) m.model_metadata["dtrn.router_bias"] = nlohmann::json(m.router.bias).dump();
  snap->slices = rank_slices(model.parameters(), optimizer, place);
  return std::shared_ptr<const CheckpointSnapshot>(std::move(snap));
}

StatusOr<std::string> write_checkpoint(const std::string& run_dir, const CheckpointSnapshot& snapshot,
                                       const SaveOptions& options) {
  if (options.keep < 0 || options.keep_every < 0) {
    return Status::InvalidArgument("checkpoint.keep / checkpoint.keep_every: must be >= 0");
  }
  Env* env = options.env ? options.env : Env::posix();
  LocalBarrier local;
  CommitBarrier* barrier = options.barrier ? options.barrier : &local;
  const std::string root = join(run_dir, "checkpoints");
  DTRN_RETURN_IF_ERROR(env->create_dirs(root));
  auto dir = commit_checkpoint(env, barrier, root, snapshot.manifest, snapshot.slices);
  if (!dir.ok()) return dir.status();
  if (barrier->rank() == 0) {
    std::vector<std::string> removed;
    Status s = apply_retention(env, root, *dir, options.keep, options.keep_every, &removed);
    if (!s.ok()) return Status(s.code(), s.message() + " (while pruning; " + *dir + " was saved)");
  }
  return dir;
}

StatusOr<std::string> save_checkpoint(const std::string& run_dir, const model::DtrnModel& model,
                                      const AdamW& optimizer, const TrainProgress& progress,
                                      const std::string& config_yaml, const SaveOptions& options) {
  // AdamW exposes its moments only through non-const accessors; a snapshot copies them, changing nothing.
  auto snap = snapshot_checkpoint(model, optimizer_state(const_cast<AdamW&>(optimizer)), RankPlace{}, progress,
                                  config_yaml);
  if (!snap.ok()) return snap.status();
  return write_checkpoint(run_dir, **snap, options);
}

Status clean_checkpoints(const std::string& run_dir, std::vector<std::string>* removed) {
  return clean_checkpoint_root(Env::posix(), join(run_dir, "checkpoints"), removed);
}

StatusOr<std::string> resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped_out) {
  Env* env = Env::posix();
  if (!env->is_dir(path)) return Status::NotFound(path + ": no such folder");
  if (env->exists(join(path, kManifestFile))) return path;
  const std::string root = env->is_dir(join(path, "checkpoints")) ? join(path, "checkpoints") : path;
  auto names = env->list_dir(root);
  if (!names.ok()) return names.status();
  std::vector<std::pair<int64_t, std::string>> dirs;
  for (const std::string& name : *names) {
    // Only committed folders: an uncommitted save is never taken for a checkpoint, nor reported.
    if (parse_step_dir_name(name) >= 0 && env->exists(join(join(root, name), kManifestFile))) {
      dirs.emplace_back(parse_step_dir_name(name), join(root, name));
    }
  }
  std::sort(dirs.rbegin(), dirs.rend());
  std::string skipped;
  for (const auto& [step, dir] : dirs) {
    Status s = verify_checkpoint(dir);
    if (s.ok()) return dir;
    skipped += "; skipped " + s.message();
    if (skipped_out) skipped_out->push_back("skipped " + dir + ", which fails verification: " + s.message());
  }
  return Status::NotFound(path + ": no valid checkpoint in " + root + skipped);
}

Status verify_checkpoint(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  for (const ShardEntry& e : m->shards) {
    auto slices = read_shard(checkpoint_dir, e);
    if (!slices.ok()) return slices.status();
  }
  return Status::Ok();
}

StatusOr<int64_t> read_checkpoint_step(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  return m->progress.step;
}

StatusOr<std::string> read_checkpoint_config(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  return m->config_yaml;
}

Status load_rank_checkpoint(const std::string& checkpoint_dir, model::DtrnModel* model, OptimizerState* optimizer,
                            TrainProgress* progress) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  const size_t routed = static_cast<size_t>(model->routed_layer_count());
  auto sized = [routed](const std::vector<double>& v) { return v.empty() || v.size() == routed; };
  if (!sized(m->router.bias) || !sized(m->router.multiplier) || (m->router.initialized && m->router.bias.empty())) {
    return Status::DataLoss(checkpoint_dir + "/" + kManifestFile + ": routing state for " +
                            std::to_string(m->router.bias.size()) + " D layers, the model has " +
                            std::to_string(routed));
  }
  DTRN_RETURN_IF_ERROR(load_rank_shards(checkpoint_dir, m->shards, rank_requests(model->parameters(), optimizer)));
  model->sync_compute_weights();
  model->set_router_state(m->router);
  if (optimizer) optimizer->step = m->optimizer_step;
  if (progress) *progress = m->progress;
  return Status::Ok();
}

Status load_checkpoint(const std::string& checkpoint_dir, model::DtrnModel* model, AdamW* optimizer,
                       TrainProgress* progress) {
  if (!optimizer) return load_rank_checkpoint(checkpoint_dir, model, nullptr, progress);
  OptimizerState state = optimizer_state(*optimizer);
  DTRN_RETURN_IF_ERROR(load_rank_checkpoint(checkpoint_dir, model, &state, progress));
  optimizer->set_step_count(state.step);
  return Status::Ok();
}

StatusOr<CheckpointWeights> read_checkpoint_weights(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  auto saved = read_model_slices(checkpoint_dir, *m);
  if (!saved.ok()) return saved.status();
  std::vector<SliceRequest> requests;
  for (const TensorSlice& s : *saved) {
    const bool seen = std::any_of(requests.begin(), requests.end(), [&](const SliceRequest& r) { return r.name == s.name; });
    if (!seen) requests.push_back(whole_request(s.name, s.global_shape));
  }
  DTRN_RETURN_IF_ERROR(fill_slices(checkpoint_dir, *saved, requests));
  CheckpointWeights w;
  for (SliceRequest& r : requests) w.tensors.emplace_back(r.name, r.out);
  w.metadata = m->model_metadata;
  w.metadata["format"] = "pt";
  return w;
}

}  // namespace dtrn::train
