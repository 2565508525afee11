#include "dtrn/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/train/safetensors.h"
#include "file_io.h"

namespace dtrn::train {
namespace {

using Json = nlohmann::ordered_json;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

constexpr int64_t kFormatVersion = 1;
constexpr char kFormatName[] = "dtrn-checkpoint";
constexpr char kManifest[] = "manifest.json";
constexpr char kModelFile[] = "model.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kConfigFile[] = "config.yaml";

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

// The step of a folder named exactly step-<digits>; -1 for anything else (*.tmp-*, *.old-*, ...).
int64_t parse_step_dir_name(const std::string& name) {
  constexpr size_t kPrefix = 5;  // "step-"
  if (name.size() <= kPrefix || name.compare(0, kPrefix, "step-") != 0 ||
      name.size() > kPrefix + 18) {
    return -1;
  }
  int64_t step = 0;
  for (size_t i = kPrefix; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string pid_suffix(const char* what) {
  return std::string(".") + what + "-" + std::to_string(::getpid());
}

// --- Manifest ---

struct FileDigest {
  uint64_t bytes = 0;
  std::string sha256;
};

struct Manifest {
  int64_t step = 0;
  int64_t tokens = 0;
  int64_t optimizer_step = 0;
  data::SamplerState sampler;
  uint64_t seed = 0;
  model::RouterState router;  // the routing controls' state; absent from older manifests (a fresh state)
  std::map<std::string, FileDigest> files;
};

// Doubles in JSON are written with 17 significant digits, so they read back bit for bit.
Json router_json(const model::RouterState& r) {
  return {{"initialized", r.initialized}, {"bias", r.bias}, {"multiplier", r.multiplier}};
}

Status read_router(const std::string& path, const Json& j, model::RouterState* r) {
  const bool ok = j.is_object() && j.contains("initialized") && j["initialized"].is_boolean() &&
                  j.contains("bias") && j["bias"].is_array() && j.contains("multiplier") && j["multiplier"].is_array();
  if (!ok) return Status::DataLoss(path + ": invalid \"routing\"");
  try {
    r->initialized = j["initialized"].get<bool>();
    r->bias = j["bias"].get<std::vector<double>>();
    r->multiplier = j["multiplier"].get<std::vector<double>>();
  } catch (const nlohmann::json::exception&) {
    return Status::DataLoss(path + ": invalid \"routing\"");
  }
  return Status::Ok();
}

std::string manifest_text(const Manifest& m) {
  Json files = Json::object();
  for (const auto& [name, d] : m.files) files[name] = {{"bytes", d.bytes}, {"sha256", d.sha256}};
  Json j = {{"format", kFormatName},
            {"version", kFormatVersion},
            {"step", m.step},
            {"tokens", m.tokens},
            {"optimizer_step", m.optimizer_step},
            {"sampler", {{"epoch", m.sampler.epoch}, {"next_sample", m.sampler.next_sample}}},
            {"seed", m.seed},
            {"routing", router_json(m.router)},
            {"files", files}};
  return j.dump(2) + "\n";
}

// Reads `key` of `obj` as T (a non-negative integer or a string); the error names the manifest and
// key.
template <typename T>
Status get_field(const std::string& path, const Json& obj, const std::string& key, T* out) {
  auto it = obj.find(key);
  bool ok = it != obj.end();
  if constexpr (std::is_same_v<T, std::string>) {
    ok = ok && it->is_string();
  } else {
    ok = ok && it->is_number_unsigned();
  }
  if (!ok) return Status::DataLoss(path + ": missing or invalid \"" + key + "\"");
  *out = it->template get<T>();
  return Status::Ok();
}

StatusOr<Manifest> read_manifest(const std::string& dir) {
  const std::string path = join(dir, kManifest);
  auto text = read_file(path);
  if (!text.ok()) return text.status();
  Json j;
  try {
    j = Json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss(path + ": bad JSON: " + e.what());
  }
  if (!j.is_object()) return Status::DataLoss(path + ": not a JSON object");
  std::string format;
  int64_t version = 0;
  DTRN_RETURN_IF_ERROR(get_field(path, j, "format", &format));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "version", &version));
  if (format != kFormatName || version != kFormatVersion) {
    return Status::DataLoss(path + ": format '" + format + "' version " + std::to_string(version) +
                            ", this dtrn reads '" + kFormatName + "' version " +
                            std::to_string(kFormatVersion));
  }
  Manifest m;
  DTRN_RETURN_IF_ERROR(get_field(path, j, "step", &m.step));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "tokens", &m.tokens));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "optimizer_step", &m.optimizer_step));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "seed", &m.seed));
  auto sampler = j.find("sampler");
  if (sampler == j.end() || !sampler->is_object()) {
    return Status::DataLoss(path + ": missing or invalid \"sampler\"");
  }
  DTRN_RETURN_IF_ERROR(get_field(path, *sampler, "epoch", &m.sampler.epoch));
  DTRN_RETURN_IF_ERROR(get_field(path, *sampler, "next_sample", &m.sampler.next_sample));
  if (j.contains("routing")) DTRN_RETURN_IF_ERROR(read_router(path, j["routing"], &m.router));
  auto files = j.find("files");
  if (files == j.end() || !files->is_object()) {
    return Status::DataLoss(path + ": missing or invalid \"files\"");
  }
  for (const auto& [name, entry] : files->items()) {
    // Only plain names: a manifest never points outside its folder.
    if (name.empty() || name == kManifest || name.find('/') != std::string::npos || name == "." ||
        name == ".." || !entry.is_object()) {
      return Status::DataLoss(path + ": invalid \"files\" entry '" + name + "'");
    }
    FileDigest d;
    DTRN_RETURN_IF_ERROR(get_field(path, entry, "bytes", &d.bytes));
    DTRN_RETURN_IF_ERROR(get_field(path, entry, "sha256", &d.sha256));
    m.files[name] = d;
  }
  for (const char* required : {kModelFile, kOptimizerFile, kConfigFile}) {
    if (!m.files.count(required)) {
      return Status::DataLoss(path + ": lists no " + required);
    }
  }
  return m;
}

// The one check of a file against its manifest entry, for verify and for load.
Status check_digest(const std::string& dir, const Manifest& m, const std::string& name,
                    const std::string& actual_sha256) {
  const FileDigest& expected = m.files.at(name);
  if (actual_sha256 != expected.sha256) {
    return Status::DataLoss(join(dir, name) + ": sha256 mismatch (manifest " + expected.sha256 +
                            ", file " + actual_sha256 + "): the file is corrupt");
  }
  return Status::Ok();
}

// --- Model and optimizer state as named host tensors ---

std::string model_config_json(const model::ModelConfig& c) {
  Json j = {{"d_model", c.d_model},
            {"n_layers", c.n_layers},
            {"n_heads", c.n_heads},
            {"n_kv_heads", c.n_kv_heads},
            {"d_ff", c.d_ff},
            {"vocab_size", c.vocab_size},
            {"padded_vocab", c.padded_vocab()},
            {"seq_len", c.seq_len},
            {"norm_eps", c.norm_eps},
            {"rope_theta", c.rope_theta}};
  return j.dump();
}

// "format": "pt" is what Hugging Face loaders expect of a PyTorch-convention file.
// The threshold biases travel with the weights (an export is a copy of this file): a model trained with
// them routes by them. The manifest's "routing" stays what a resume reads.
std::map<std::string, std::string> model_metadata(const model::DtrnModel& model) {
  std::map<std::string, std::string> m = {{"format", "pt"},
                                          {"dtrn.model", model_config_json(model.config())},
                                          {"dtrn.layout", model.layout()}};
  if (model.router_state().initialized) m["dtrn.router_bias"] = Json(model.router_state().bias).dump();
  return m;
}

Tensor host_f32(const Tensor& t) { return t.detach().to(DType::kF32).to(Device::cpu()); }

NamedTensors model_state(const model::DtrnModel& model) {
  NamedTensors out;
  for (const model::NamedParameter& p : model.parameters())
    out.emplace_back(p.name, host_f32(p.tensor));
  return out;
}

std::string exp_avg_name(const std::string& param) { return param + ".exp_avg"; }
std::string exp_avg_sq_name(const std::string& param) { return param + ".exp_avg_sq"; }

NamedTensors optimizer_state(const AdamW& optimizer) {
  // AdamW exposes its moments only through non-const accessors; reading them here changes nothing.
  AdamW& opt = const_cast<AdamW&>(optimizer);
  NamedTensors out;
  for (size_t i = 0; i < opt.params().size(); ++i) {
    out.emplace_back(exp_avg_name(opt.params()[i].name), host_f32(opt.exp_avg()[i]));
    out.emplace_back(exp_avg_sq_name(opt.params()[i].name), host_f32(opt.exp_avg_sq()[i]));
  }
  return out;
}

// --- Filling tensors from a file ---

// A tensor to fill from a file, by name.
struct Target {
  std::string name;
  Tensor tensor;
  bool optional = false;  // a file without it leaves the tensor as it is
  int64_t min_rows =
      -1;  // >= 0: the file may hold only the first rows (at least this many) of dim 0
};

// Matches the file's tensors to `targets` and checks every shape, appending (destination, source)
// pairs to `copies`. Copies nothing itself, so that a failed check leaves the model untouched.
Status plan_copies(const std::string& file, const SafetensorsContents& contents,
                   const std::vector<Target>& targets,
                   std::vector<std::pair<Tensor, Tensor>>* copies) {
  std::set<std::string> wanted;
  for (const Target& t : targets) {
    wanted.insert(t.name);
    const Tensor* src = contents.find(t.name);
    if (!src) {
      if (t.optional) continue;
      return Status::InvalidArgument(file + ": missing tensor '" + t.name + "'");
    }
    const Shape& want = t.tensor.shape();
    Shape got = src->shape();
    const bool fewer_rows_ok = t.min_rows >= 0 && got.size() == want.size() && !got.empty() &&
                               got[0] >= t.min_rows && got[0] <= want[0];
    if (fewer_rows_ok) got[0] = want[0];
    if (got != want) {
      return Status::InvalidArgument(
          file + ": tensor '" + t.name + "' has shape " + shape_str(src->shape()) +
          ", the model expects " + shape_str(want) +
          (t.min_rows >= 0 ? " (or at least " + std::to_string(t.min_rows) + " rows)" : ""));
    }
    Tensor dst = t.tensor.detach();
    if (src->shape() != want) dst = dst.narrow(0, 0, src->shape()[0]);
    copies->emplace_back(dst, *src);
  }
  for (const auto& [name, tensor] : contents.tensors) {
    if (!wanted.count(name)) {
      return Status::InvalidArgument(file + ": unexpected tensor '" + name +
                                     "', which this model does not have");
    }
  }
  return Status::Ok();
}

void run_copies(const std::vector<std::pair<Tensor, Tensor>>& copies) {
  NoGradGuard no_grad;
  for (const auto& [dst, src] : copies) dst.copy_(src);
}

std::vector<Target> model_targets(const model::DtrnModel& model) {
  std::vector<Target> targets;
  for (const model::NamedParameter& p : model.parameters()) targets.push_back({p.name, p.tensor});
  return targets;
}

// Reads a safetensors file of a checkpoint and checks it against the manifest in the same pass.
StatusOr<SafetensorsContents> read_checked(const std::string& dir, const Manifest& m,
                                           const std::string& name) {
  std::string sha;
  auto contents = read_safetensors(join(dir, name), &sha);
  if (!contents.ok()) return contents.status();
  DTRN_RETURN_IF_ERROR(check_digest(dir, m, name, sha));
  return contents;
}

// --- Saving ---

Status write_checkpoint_files(const std::string& dir, const model::DtrnModel& model,
                              const AdamW& optimizer, const TrainProgress& progress,
                              const std::string& config_yaml) {
  Manifest m;
  m.step = progress.step;
  m.tokens = progress.tokens;
  m.optimizer_step = optimizer.step_count();
  m.sampler = progress.sampler;
  m.seed = progress.seed;
  m.router = model.router_state();
  DTRN_RETURN_IF_ERROR(write_safetensors(join(dir, kModelFile), model_state(model),
                                         model_metadata(model), &m.files[kModelFile].sha256));
  DTRN_RETURN_IF_ERROR(write_safetensors(join(dir, kOptimizerFile), optimizer_state(optimizer), {},
                                         &m.files[kOptimizerFile].sha256));
  DTRN_RETURN_IF_ERROR(
      write_file(join(dir, kConfigFile), config_yaml, &m.files[kConfigFile].sha256));
  for (auto& [name, digest] : m.files) {
    std::error_code ec;
    digest.bytes = std::filesystem::file_size(join(dir, name), ec);
    if (ec) return error_code_status(join(dir, name), ec);
  }
  // The manifest last: its presence marks a complete checkpoint.
  DTRN_RETURN_IF_ERROR(write_file(join(dir, kManifest), manifest_text(m)));
  return sync_dir(dir);
}

// Renames the finished temporary folder into place. A checkpoint of the same step that already
// exists (a run resumed from an earlier step) is moved aside first and removed only after the
// rename.
Status commit(const std::string& root, const std::string& tmp, const std::string& final_dir) {
  std::error_code ec;
  std::string aside;
  if (std::filesystem::exists(final_dir, ec)) {
    aside = final_dir + pid_suffix("old");
    DTRN_RETURN_IF_ERROR(remove_tree(aside));
    DTRN_RETURN_IF_ERROR(rename_path(final_dir, aside));
  }
  Status s = rename_path(tmp, final_dir);
  if (!s.ok()) {
    if (!aside.empty()) rename_path(aside, final_dir);
    return s;
  }
  DTRN_RETURN_IF_ERROR(sync_dir(root));
  return aside.empty() ? Status::Ok() : remove_tree(aside);
}

struct StepDir {
  int64_t step;
  std::string path;
};

// Folders named step-<digits> under `root`, newest first.
StatusOr<std::vector<StepDir>> step_dirs(const std::string& root) {
  auto names = list_dir(root);
  if (!names.ok()) return names.status();
  std::vector<StepDir> dirs;
  for (const std::string& name : *names) {
    const int64_t step = parse_step_dir_name(name);
    if (step >= 0) dirs.push_back({step, join(root, name)});
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const StepDir& a, const StepDir& b) { return a.step > b.step; });
  return dirs;
}

// Removes complete checkpoints beyond the newest `keep`, never `just_saved`. Each is renamed out of
// the step-* namespace first, so that a crash mid-removal never leaves a half-deleted "checkpoint".
Status prune(const std::string& root, const std::string& just_saved, int64_t keep) {
  if (keep <= 0) return Status::Ok();
  auto dirs = step_dirs(root);
  if (!dirs.ok()) return dirs.status();
  int64_t kept = 1;  // just_saved
  for (const StepDir& d : *dirs) {
    std::error_code ec;
    if (d.path == just_saved || !std::filesystem::exists(join(d.path, kManifest), ec)) continue;
    if (kept < keep) {
      ++kept;
      continue;
    }
    const std::string doomed = d.path + pid_suffix("deleting");
    DTRN_RETURN_IF_ERROR(rename_path(d.path, doomed));
    DTRN_RETURN_IF_ERROR(remove_tree(doomed));
  }
  return Status::Ok();
}

// --- Export target ---

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

Status check_export_target(const std::string& out_file, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target = fs::weakly_canonical(fs::absolute(out_file, ec), ec);
  // A checkpoint folder holds no subfolders, so the parent is the only place to look.
  auto manifest = read_file(join(target.parent_path().string(), kManifest));
  if (manifest.ok() && manifest->find(kFormatName) != std::string::npos) {
    return Status::FailedPrecondition(out_file + ": inside the checkpoint " + target.parent_path().string() +
                                      "; export writes outside checkpoint folders, --force or not");
  }
  if (fs::is_directory(target, ec)) return Status::InvalidArgument(out_file + ": is a folder; --out names a file");
  if (fs::exists(target, ec) && !force) {
    return Status::FailedPrecondition(out_file + ": exists; pass --force to replace it");
  }
  if (!fs::is_directory(target.parent_path(), ec)) {
    return Status::NotFound(out_file + ": the folder " + target.parent_path().string() + " does not exist");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> save_checkpoint(const std::string& run_dir, const model::DtrnModel& model,
                                      const AdamW& optimizer, const TrainProgress& progress,
                                      const std::string& config_yaml, int64_t keep) {
  if (progress.step < 0) {
    return Status::InvalidArgument("save_checkpoint: negative step " +
                                   std::to_string(progress.step));
  }
  if (keep < 0)
    return Status::InvalidArgument("checkpoint.keep: " + std::to_string(keep) + " is negative");
  const std::string root = join(run_dir, "checkpoints");
  DTRN_RETURN_IF_ERROR(create_dirs(root));
  const std::string final_dir = join(root, step_dir_name(progress.step));
  const std::string tmp = final_dir + pid_suffix("tmp");
  DTRN_RETURN_IF_ERROR(remove_tree(tmp));  // left by an earlier process that had our pid
  DTRN_RETURN_IF_ERROR(create_dirs(tmp));
  Status s = write_checkpoint_files(tmp, model, optimizer, progress, config_yaml);
  if (s.ok()) s = commit(root, tmp, final_dir);
  if (!s.ok()) {
    remove_tree(tmp);
    return s;
  }
  s = prune(root, final_dir, keep);
  if (!s.ok()) {
    return Status(s.code(), s.message() + " (while pruning; " + final_dir + " was saved)");
  }
  return final_dir;
}

StatusOr<std::string> resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped_out) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return Status::NotFound(path + ": no such folder");
  if (std::filesystem::exists(join(path, kManifest), ec)) return path;
  const std::string root = std::filesystem::is_directory(join(path, "checkpoints"), ec)
                               ? join(path, "checkpoints")
                               : path;
  auto dirs = step_dirs(root);
  if (!dirs.ok()) return dirs.status();
  std::string skipped;
  for (const StepDir& d : *dirs) {
    Status s = verify_checkpoint(d.path);
    if (s.ok()) return d.path;
    skipped += "; skipped " + s.message();
    if (skipped_out) skipped_out->push_back("skipped " + d.path + ", which fails verification: " + s.message());
  }
  return Status::NotFound(path + ": no valid checkpoint in " + root + skipped);
}

Status verify_checkpoint(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  for (const auto& [name, digest] : m->files) {
    const std::string path = join(checkpoint_dir, name);
    std::error_code ec;
    const uint64_t bytes = std::filesystem::file_size(path, ec);
    if (ec) return error_code_status(path, ec);
    if (bytes != digest.bytes) {
      return Status::DataLoss(path + ": " + std::to_string(bytes) + " bytes, the manifest says " +
                              std::to_string(digest.bytes));
    }
    auto sha = file_sha256(path);
    if (!sha.ok()) return sha.status();
    DTRN_RETURN_IF_ERROR(check_digest(checkpoint_dir, *m, name, *sha));
  }
  return Status::Ok();
}

StatusOr<int64_t> read_checkpoint_step(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  return m->step;
}

StatusOr<std::string> read_checkpoint_config(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  std::string sha;
  auto text = read_file(join(checkpoint_dir, kConfigFile), &sha);
  if (!text.ok()) return text.status();
  DTRN_RETURN_IF_ERROR(check_digest(checkpoint_dir, *m, kConfigFile, sha));
  return text;
}

Status load_checkpoint(const std::string& checkpoint_dir, model::DtrnModel* model, AdamW* optimizer,
                       TrainProgress* progress) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  auto weights = read_checked(checkpoint_dir, *m, kModelFile);
  if (!weights.ok()) return weights.status();
  std::vector<std::pair<Tensor, Tensor>> copies;
  DTRN_RETURN_IF_ERROR(
      plan_copies(join(checkpoint_dir, kModelFile), *weights, model_targets(*model), &copies));
  if (optimizer) {
    auto moments = read_checked(checkpoint_dir, *m, kOptimizerFile);
    if (!moments.ok()) return moments.status();
    std::vector<Target> targets;
    for (size_t i = 0; i < optimizer->params().size(); ++i) {
      const std::string& name = optimizer->params()[i].name;
      targets.push_back({exp_avg_name(name), optimizer->exp_avg()[i]});
      targets.push_back({exp_avg_sq_name(name), optimizer->exp_avg_sq()[i]});
    }
    DTRN_RETURN_IF_ERROR(
        plan_copies(join(checkpoint_dir, kOptimizerFile), *moments, targets, &copies));
  }
  const size_t routed = static_cast<size_t>(model->routed_layer_count());
  auto sized = [routed](const std::vector<double>& v) { return v.empty() || v.size() == routed; };
  if (!sized(m->router.bias) || !sized(m->router.multiplier) || (m->router.initialized && m->router.bias.empty())) {
    return Status::DataLoss(join(checkpoint_dir, kManifest) + ": routing state for " +
                            std::to_string(m->router.bias.size()) + " D layers, the model has " +
                            std::to_string(routed));
  }
  run_copies(copies);
  model->sync_compute_weights();
  model->set_router_state(m->router);
  if (optimizer) optimizer->set_step_count(m->optimizer_step);
  if (progress) {
    progress->step = m->step;
    progress->tokens = m->tokens;
    progress->sampler = m->sampler;
    progress->seed = m->seed;
  }
  return Status::Ok();
}

Status export_safetensors(const std::string& checkpoint_dir, const std::string& out_file, bool force) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  DTRN_RETURN_IF_ERROR(check_export_target(out_file, force));
  auto weights = read_checked(checkpoint_dir, *m, kModelFile);
  if (!weights.ok()) return weights.status();
  for (const char* key : {"dtrn.model", "dtrn.layout"}) {
    if (!weights->metadata.count(key)) {
      return Status::DataLoss(join(checkpoint_dir, kModelFile) + ": no \"" + key + "\" metadata");
    }
  }
  // Written beside the target and renamed over it, so that `out_file` is never half-written.
  const std::string tmp = out_file + pid_suffix("tmp");
  Status s = write_safetensors(tmp, weights->tensors, weights->metadata);
  if (s.ok()) s = rename_path(tmp, out_file);
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return Status(s.code(), replace_all(s.message(), tmp, out_file));  // the user named out_file
  }
  const std::string parent = std::filesystem::path(out_file).parent_path().string();
  return sync_dir(parent.empty() ? "." : parent);
}

Status init_from_safetensors(const std::string& file, model::DtrnModel* model) {
  auto contents = read_safetensors(file);
  if (!contents.ok()) return contents.status();
  std::vector<Target> targets = model_targets(*model);
  for (Target& t : targets) {
    if (t.name.find(".router.") != std::string::npos) t.optional = true;
    if (t.name == "model.embed_tokens.weight") t.min_rows = model->config().vocab_size;
  }
  std::vector<std::pair<Tensor, Tensor>> copies;
  DTRN_RETURN_IF_ERROR(plan_copies(file, *contents, targets, &copies));
  model::RouterState router;
  auto bias = contents->metadata.find("dtrn.router_bias");
  if (bias != contents->metadata.end()) {
    const Json j = Json::parse(bias->second, nullptr, false);
    if (!j.is_array() || j.size() != static_cast<size_t>(model->routed_layer_count()) ||
        !std::all_of(j.begin(), j.end(), [](const Json& v) { return v.is_number(); })) {
      return Status::DataLoss(file + ": metadata \"dtrn.router_bias\" is not one number per D layer");
    }
    router.initialized = true;
    router.bias = j.get<std::vector<double>>();
  }
  run_copies(copies);
  model->sync_compute_weights();
  model->set_router_state(router);
  return Status::Ok();
}

}  // namespace dtrn::train
