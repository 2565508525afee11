// `dtrn export` and `--init-from`: a model's weights as one Hugging Face safetensors file, out of a
// checkpoint of any layout and into a freshly built model.
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
#include "checkpoint_format.h"
#include "checkpoint_read.h"
#include "file_io.h"

namespace dtrn::train {
namespace {

std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

std::string pid_suffix(const char* what) {
  return std::string(".") + what + "-" + std::to_string(::getpid());
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
  auto manifest = read_file(join(target.parent_path().string(), kManifestFile));
  if (manifest.ok() && manifest->find("dtrn-checkpoint") != std::string::npos) {
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

Status export_safetensors(const std::string& checkpoint_dir, const std::string& out_file, bool force) {
  auto weights = read_checkpoint_weights(checkpoint_dir);
  if (!weights.ok()) return weights.status();
  DTRN_RETURN_IF_ERROR(check_export_target(out_file, force));
  for (const char* key : {"dtrn.model", "dtrn.layout"}) {
    if (!weights->metadata.count(key)) {
      return Status::DataLoss(join(checkpoint_dir, kManifestFile) + ": no \"" + key + "\" model metadata");
    }
  }
  // Written beside the target and renamed over it, so that `out_file` is never half-written.
  const std::string tmp = out_file + pid_suffix("tmp");
  Status s = write_safetensors(tmp, weights->tensors, weights->metadata);
  if (s.ok()) s = Env::posix()->rename(tmp, out_file);
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return Status(s.code(), replace_all(s.message(), tmp, out_file));  // the user named out_file
  }
  return Env::posix()->sync_dir(parent_dir(out_file));
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
    const nlohmann::json j = nlohmann::json::parse(bias->second, nullptr, false);
    if (!j.is_array() || j.size() != static_cast<size_t>(model->routed_layer_count()) ||
        !std::all_of(j.begin(), j.end(), [](const nlohmann::json& v) { return v.is_number(); })) {
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
