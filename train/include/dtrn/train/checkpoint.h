// Single-process checkpoints: everything a run needs to continue exactly where it stopped.
//
// Layout: RUN/checkpoints/step-NNNNNNNN/ holding model.safetensors (fp32 parameters, Hugging Face
// names), optimizer.safetensors (AdamW exp_avg / exp_avg_sq per parameter, named "<param>.exp_avg" and
// "<param>.exp_avg_sq"), config.yaml (the resolved job config), and manifest.json, written last: the
// step, token counter, optimizer step count, sampler state, the RNG seed, a format version, and the
// sha256 of every other file. A folder is a checkpoint only when its manifest exists and verifies.
// Saving writes into step-NNNNNNNN.tmp-<pid>/ and renames it into place (atomic on POSIX), then prunes
// old checkpoints beyond `keep`. Nothing already saved is touched before the new one is complete.
// The sharded, coordinated format of later work extends this manifest.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dtrn/data/sampler.h"
#include "dtrn/model/model.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/runtime/status.h"

namespace dtrn::train {

struct TrainProgress {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // training tokens consumed, all ranks
  data::SamplerState sampler;
  uint64_t seed = 0;
};

// Saves into RUN/checkpoints/step-NNNNNNNN/ (RUN = run_dir). keep = 0 keeps all.
StatusOr<std::string> save_checkpoint(const std::string& run_dir, const model::DtrnModel& model,
                                      const AdamW& optimizer, const TrainProgress& progress,
                                      const std::string& config_yaml, int64_t keep);

// `path` is a checkpoint folder, or a run directory (meaning its newest valid checkpoint). Returns the
// checkpoint folder; NotFound when there is none. Newer step folders that fail verification are passed
// over; `skipped`, when given, receives one line per such folder saying which and why, for the caller to
// print (a corrupt newest checkpoint is never skipped without a word).
StatusOr<std::string> resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped = nullptr);

// Checks the manifest and every file's sha256.
Status verify_checkpoint(const std::string& checkpoint_dir);

// The step a checkpoint's manifest records (optimizer steps completed).
StatusOr<int64_t> read_checkpoint_step(const std::string& checkpoint_dir);

// Reads the resolved config stored in a checkpoint.
StatusOr<std::string> read_checkpoint_config(const std::string& checkpoint_dir);

// Loads parameters (and, when optimizer is non-null, AdamW state) into an already-constructed model
// whose config matches; a missing tensor or a shape mismatch is an error naming the tensor.
Status load_checkpoint(const std::string& checkpoint_dir, model::DtrnModel* model, AdamW* optimizer,
                       TrainProgress* progress);

// `dtrn export`: the model of a checkpoint as one safetensors file with Hugging Face Llama names
// (tied embeddings: no lm_head.weight) and the routers as model.layers.N.router.{0,2}.{weight,bias};
// metadata holds the model config (as JSON under "dtrn.model") and "dtrn.layout". Refuses (one line, no
// file touched) an `out_file` that exists unless `force`, and any `out_file` inside a checkpoint folder
// (one holding manifest.json), `force` or not: a checkpoint's files are only ever written by a save.
Status export_safetensors(const std::string& checkpoint_dir, const std::string& out_file, bool force = false);

// `--init-from`: loads a safetensors file of matching shape into the model: every shared tensor is
// required; router tensors are optional (a dense Llama file leaves the freshly initialised routers).
// The embedding may have the unpadded vocabulary (rows beyond it stay as initialised).
Status init_from_safetensors(const std::string& file, model::DtrnModel* model);

}  // namespace dtrn::train
