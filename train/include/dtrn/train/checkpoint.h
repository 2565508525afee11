// Checkpoints: everything a run needs to continue exactly where it stopped, in the sharded format of
// docs/checkpoints.md (version 2): RUN/checkpoints/step-NNNNNNNN/ holds one safetensors shard per rank
// that owns data (fp32 master weights under Hugging Face names, AdamW moments as "<param>.exp_avg" and
// "<param>.exp_avg_sq", each slice described by its global shape and offsets, each tensor with its
// sha256) and manifest.json, which commits the checkpoint (src/checkpoint_commit.h: the two-phase
// commit and the recovery rules). RUN/checkpoints/latest names the newest committed checkpoint.
// A folder is a checkpoint only when its manifest exists and everything verifies. Version 1
// (single-file) checkpoints are refused with one line.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtrn/data/sampler.h"
#include "dtrn/model/model.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/runtime/status.h"

namespace dtrn::train {

// The starvation monitor's run of consecutive low / high steps of one layer (trainer.h).
struct MonitorRun {
  int64_t layer = 0, low = 0, high = 0;
};

struct TrainProgress {
  int64_t step = 0;     // optimizer steps completed
  int64_t tokens = 0;   // training tokens consumed, all ranks
  int64_t samples = 0;  // training samples consumed, all ranks
  data::SamplerState sampler;
  uint64_t seed = 0;  // every random stream of a run derives from it and the counters above
  std::vector<MonitorRun> monitor;
};

// How the state was split when it was saved: data parallel ranks, tensor parallel ranks, and the ZeRO
// stage (0: optimizer state replicated over dp; 1: split over dp).
struct CheckpointLayout {
  int64_t dp = 1, tp = 1, zero = 0;
};

// This process's place in the layout that saves or loads: which DP and TP rank it is.
struct RankPlace {
  CheckpointLayout layout;
  int64_t dp_rank = 0, tp_rank = 0;
};

// A rank's optimizer state as checkpoints see it: the AdamW moments as pieces, each the flattened elements
// [begin, begin + numel) of one parameter's local (tensor-parallel) tensor. With ZeRO-1 these are the DP
// rank's own pieces (sharded_over_dp), else whole tensors. The tensors are the optimizer's own: a load
// writes into them.
struct OptimizerState {
  struct Piece {
    std::string param;
    int64_t begin = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  std::vector<Piece> pieces;
  bool sharded_over_dp = false;
  int64_t step = 0;  // optimizer steps taken
};
// The whole state of a plain AdamW.
OptimizerState optimizer_state(AdamW& optimizer);

class Env;            // src/env.h
class CommitBarrier;  // dtrn/train/commit_barrier.h

struct SaveOptions {
  int64_t keep = 0;        // keep the newest `keep` verified checkpoints; 0 keeps all
  int64_t keep_every = 0;  // also keep every checkpoint whose step is a multiple of it; 0: none
  Env* env = nullptr;                // nullptr: the real file system
  CommitBarrier* barrier = nullptr;  // nullptr: this process is the only rank
};

// The state of one save, copied to host memory: taking it is the only part of a save that blocks
// training (an asynchronous save writes it from another thread while training goes on).
struct CheckpointSnapshot;
// Each rank of a multi-rank job snapshots what it saves (docs/checkpoints.md, "Who writes what") and
// writes it through a CommitBarrier over all ranks.
StatusOr<std::shared_ptr<const CheckpointSnapshot>> snapshot_checkpoint(
    const model::DtrnModel& model, const OptimizerState& optimizer, const RankPlace& place,
    const TrainProgress& progress, const std::string& config_yaml);
// Writes and commits a snapshot into RUN/checkpoints/ (RUN = run_dir), then applies retention. Returns
// the checkpoint folder.
StatusOr<std::string> write_checkpoint(const std::string& run_dir, const CheckpointSnapshot& snapshot,
                                       const SaveOptions& options);
// Both, one after the other, for one process (dp = tp = 1).
StatusOr<std::string> save_checkpoint(const std::string& run_dir, const model::DtrnModel& model,
                                      const AdamW& optimizer, const TrainProgress& progress,
                                      const std::string& config_yaml, const SaveOptions& options = {});

// Removes what crashed saves left in RUN/checkpoints (src/checkpoint_commit.h); call at start, with the
// run directory locked. `removed` receives one line per removal.
Status clean_checkpoints(const std::string& run_dir, std::vector<std::string>* removed);

// `path` is a checkpoint folder, or a run directory (meaning its newest valid checkpoint). Returns the
// checkpoint folder; NotFound when there is none. Newer step folders that fail verification are passed
// over; `skipped`, when given, receives one line per such folder saying which and why, for the caller to
// print (a corrupt newest checkpoint is never skipped without a word).
StatusOr<std::string> resolve_checkpoint(const std::string& path, std::vector<std::string>* skipped = nullptr);

// `dtrn ckpt list`: the step folders of a run directory (or of its checkpoints/ folder), newest first.
// `state` is "ok" (committed and, with `verify`, verified), "uncommitted" (no manifest: a save that never
// finished), or the one-line reason it fails; `latest` marks the one RUN/checkpoints/latest names.
struct CheckpointInfo {
  std::string dir;
  int64_t step = 0;
  CheckpointLayout layout;
  uint64_t bytes = 0;  // of the shards the manifest names
  bool latest = false;
  std::string state;
};
StatusOr<std::vector<CheckpointInfo>> list_checkpoints(const std::string& path, bool verify);
// `dtrn ckpt inspect`: the manifest's counters, layout and shards, and every tensor slice (name, global
// shape, offsets, shape) of every shard, as text; reading a shard verifies it.
StatusOr<std::string> inspect_checkpoint(const std::string& checkpoint_dir);

// Checks the manifest, every shard's size and header digest and every tensor's sha256; the error names
// the file (and the tensor).
Status verify_checkpoint(const std::string& checkpoint_dir);

// The step a checkpoint's manifest records (optimizer steps completed).
StatusOr<int64_t> read_checkpoint_step(const std::string& checkpoint_dir);

// Reads the resolved config stored in a checkpoint.
StatusOr<std::string> read_checkpoint_config(const std::string& checkpoint_dir);

// Loads this rank's parameters (and, when optimizer is non-null, its pieces of the AdamW moments and the
// step count) into an already-constructed model whose config matches, whatever layout saved them. Reads
// only the saved slices it needs, verifying each (verify_checkpoint reads everything); a missing tensor,
// a shape mismatch or a corrupt slice it reads is an error naming the tensor.
Status load_rank_checkpoint(const std::string& checkpoint_dir, model::DtrnModel* model, OptimizerState* optimizer,
                            TrainProgress* progress);
// The same into a plain AdamW (nullptr: parameters only).
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
