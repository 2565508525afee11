// The on-disk format of a checkpoint, version 2 (docs/checkpoints.md): step-NNNNNNNN/ holds one shard
// file per rank that owns data and manifest.json, whose presence commits the checkpoint.
//
// A shard is a safetensors file of fp32 tensor slices; its "__metadata__" holds "dtrn.slices", a JSON
// object giving for each tensor the global shape, the offsets of the slice within it and the sha256 of
// the slice's bytes. A rank holding several boxes of one tensor (ZeRO-1 pieces that are not boxes)
// stores the second and later ones under "<name>#<k>", their description naming the tensor under
// "tensor". A Hugging Face reader sees plain tensors (the slices). The manifest names every
// shard with its size and the sha256 of its header (which holds the tensors' digests, so header digest
// + tensor digests cover every byte), and records the layout, counters, RNG seed, starvation monitor
// state and the resolved config; its own last field is the sha256 of the rest of it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dtrn/data/sampler.h"
#include "dtrn/model/router_control.h"
#include "dtrn/runtime/status.h"
#include "dtrn/runtime/tensor.h"
#include "dtrn/train/checkpoint.h"
#include "env.h"

namespace dtrn::train {

inline constexpr int64_t kCheckpointVersion = 2;
inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kLatestFile[] = "latest";

// One rank's part of a tensor: `data` (host, fp32) is the box of the global tensor starting at
// `offsets`, of data's shape. A replicated tensor is saved by one rank, whole (offsets all zero).
struct TensorSlice {
  std::string name;
  Shape global_shape;
  std::vector<int64_t> offsets;
  Tensor data;
};

struct ShardEntry {
  std::string file;
  int64_t rank = 0;
  uint64_t bytes = 0;
  std::string header_sha256;
};

struct Manifest {
  TrainProgress progress;
  int64_t optimizer_step = 0;
  CheckpointLayout layout;
  std::string config_yaml;
  std::map<std::string, std::string> model_metadata;  // "dtrn.model" and "dtrn.layout", for export
  model::RouterState router;  // the routing controls' state (router_control.h); optional when reading
  std::string save_id;  // names this save's shard files, so a re-save never overwrites a committed one
  std::vector<ShardEntry> shards;
};

std::string manifest_text(const Manifest& m);
// `path` is only for messages. Refuses version 1 (single-process) checkpoints with one line.
StatusOr<Manifest> parse_manifest(const std::string& path, const std::string& text);
StatusOr<Manifest> read_manifest(const std::string& checkpoint_dir);

// "shard-RRRRR-of-WWWWW.<save_id>.safetensors"
std::string shard_file_name(int64_t rank, int64_t world, const std::string& save_id);

// Writes `slices` as a shard to `path` (not renamed, synced and closed) and returns its entry (`file`
// is the last part of `path`).
StatusOr<ShardEntry> write_shard(Env* env, const std::string& path, int64_t rank,
                                 const std::vector<TensorSlice>& slices);
// A saved slice's place without its data: what a reader of part of a shard learns of the slices it
// skips (reshard.h counts them when it checks that every element of a tensor is saved once).
struct SliceBox {
  std::string name;
  Shape global_shape;
  std::vector<int64_t> offsets;
  Shape shape;
};
// Which slices to read, given each slice's tensor name, offsets and shape.
using SliceFilter = std::function<bool(const std::string& name, const std::vector<int64_t>& offsets, const Shape& shape)>;

// Reads a shard and checks it against its entry and every tensor read against its digest: one DataLoss
// line naming the file (and the tensor) for a missing, truncated or corrupt shard. With `wanted`, only
// the slices it accepts are read (and verified); the others go to `skipped`, unread.
StatusOr<std::vector<TensorSlice>> read_shard(const std::string& dir, const ShardEntry& entry,
                                              const SliceFilter& wanted = {}, std::vector<SliceBox>* skipped = nullptr);

}  // namespace dtrn::train
