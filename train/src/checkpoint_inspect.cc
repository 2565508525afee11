// `dtrn ckpt list` and `dtrn ckpt inspect`: what a run's checkpoints hold, read without loading a model.
#include <algorithm>
#include <sstream>

#include "checkpoint_commit.h"
#include "checkpoint_format.h"
#include "dtrn/train/checkpoint.h"
#include "env.h"
#include "file_io.h"

namespace dtrn::train {

StatusOr<std::vector<CheckpointInfo>> list_checkpoints(const std::string& path, bool verify) {
  Env* env = Env::posix();
  const std::string root = env->is_dir(path + "/checkpoints") ? path + "/checkpoints" : path;
  auto names = env->list_dir(root);
  if (!names.ok()) return names.status();
  std::string latest;
  if (auto text = read_file(root + "/" + kLatestFile); text.ok()) latest = text->substr(0, text->find('\n'));
  std::vector<CheckpointInfo> out;
  for (const std::string& name : *names) {
    const int64_t step = parse_step_dir_name(name);
    if (step < 0) continue;
    CheckpointInfo info;
    info.dir = root + "/" + name;
    info.step = step;
    info.latest = name == latest;
    if (!env->exists(info.dir + "/" + kManifestFile)) {
      info.state = "uncommitted";
    } else if (auto m = read_manifest(info.dir); !m.ok()) {
      info.state = m.status().message();
    } else {
      info.layout = m->layout;
      for (const ShardEntry& s : m->shards) info.bytes += s.bytes;
      Status s = verify ? verify_checkpoint(info.dir) : Status::Ok();
      info.state = s.ok() ? "ok" : s.message();
    }
    out.push_back(info);
  }
  std::sort(out.begin(), out.end(), [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step > b.step; });
  return out;
}

StatusOr<std::string> inspect_checkpoint(const std::string& checkpoint_dir) {
  auto m = read_manifest(checkpoint_dir);
  if (!m.ok()) return m.status();
  const TrainProgress& p = m->progress;
  std::ostringstream os;
  os << "checkpoint " << checkpoint_dir << " (format version " << kCheckpointVersion << ")\n"
     << "step " << p.step << ", tokens " << p.tokens << ", samples " << p.samples << ", optimizer step "
     << m->optimizer_step << "\n"
     << "sampler epoch " << p.sampler.epoch << ", next sample " << p.sampler.next_sample << "; seed " << p.seed
     << "\n"
     << "layout dp " << m->layout.dp << ", tp " << m->layout.tp << ", zero " << m->layout.zero << "; save "
     << m->save_id << "\n";
  for (const MonitorRun& r : p.monitor) {
    os << "monitor layer " << r.layer << ": " << r.low << " low, " << r.high << " high steps in a row\n";
  }
  for (const auto& [key, value] : m->model_metadata) os << key << ": " << value << "\n";
  for (const ShardEntry& e : m->shards) {
    auto slices = read_shard(checkpoint_dir, e);
    if (!slices.ok()) return slices.status();
    os << "shard " << e.file << " (rank " << e.rank << ", " << e.bytes << " bytes, " << slices->size()
       << " tensors)\n";
    for (const TensorSlice& s : *slices) {
      os << "  " << s.name << " " << shape_str(s.data.shape()) << " at " << shape_str(s.offsets) << " of "
         << shape_str(s.global_shape) << "\n";
    }
  }
  return os.str();
}

}  // namespace dtrn::train
