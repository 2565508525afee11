#include "bench_saves.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>

#include "disk_bandwidth.h"
#include "dtrn/train/checkpoint.h"
#include "env.h"

namespace dtrn::train {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double ms_since(BenchSaves::Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(BenchSaves::Clock::now() - t0).count();
}

// The bytes of every file in a checkpoint folder: its shards and its manifest.
StatusOr<uint64_t> folder_bytes(Env* env, const std::string& dir) {
  auto names = env->list_dir(dir);
  if (!names.ok()) return names.status();
  uint64_t bytes = 0;
  for (const std::string& name : *names) {
    auto size = env->file_size(dir + "/" + name);
    if (!size.ok()) return size.status();
    bytes += *size;
  }
  return bytes;
}

}  // namespace

BenchSaves::BenchSaves(const JobConfig& config, std::string run_dir, bool temporary)
    : config_(config), config_yaml_(to_yaml(config)), temporary_(temporary) {
  result_.run_dir = std::move(run_dir);
  writer_ = std::make_unique<AsyncCheckpointWriter>(
      result_.run_dir,
      SaveOptions{config.checkpoint.keep, config.checkpoint.keep_every, &env_, nullptr});
}

StatusOr<std::unique_ptr<BenchSaves>> BenchSaves::Open(const JobConfig& config, const BenchOptions& options) {
  std::string dir = options.checkpoint_dir;
  const bool temporary = dir.empty();
  if (temporary) {
    std::string name = (std::filesystem::temp_directory_path() / "dtrn-bench-ckpt-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) return Status::IoError(name + ": cannot create a temporary folder");
    dir = name;
  } else {
    DTRN_RETURN_IF_ERROR(Env::posix()->create_dirs(dir));
    if (Env::posix()->exists(dir + "/checkpoints")) {
      return Status::FailedPrecondition("bench: --checkpoint-dir " + dir +
                                        " already holds checkpoints/; give a new or empty folder");
    }
  }
  std::unique_ptr<BenchSaves> saves(new BenchSaves(config, dir, temporary));
  saves->result_.every = options.checkpoint_every;
  return saves;
}

BenchSaves::~BenchSaves() {
  writer_.reset();  // joins its thread before its folder goes
  if (temporary_) (void)Env::posix()->remove_tree(result_.run_dir);
}

Status BenchSaves::step_done(int64_t completed, int64_t timed, Clock::time_point start,
                             const model::DtrnModel& model, AdamW& optimizer) {
  const bool writing_at_start = writing_;
  DTRN_RETURN_IF_ERROR(record(writer_->poll()));
  if (timed % result_.every != 0) {
    (writing_at_start ? writing_ms_ : quiet_ms_).push_back(ms_since(start));
    return Status::Ok();
  }
  // As Trainer::save: at most one save in flight, then the snapshot; both hold training up.
  BenchSave save;
  save.step = completed;
  const auto t0 = Clock::now();
  DTRN_RETURN_IF_ERROR(record(writer_->wait()));
  TrainProgress progress;
  progress.step = completed;
  progress.tokens = completed * config_.train.micro_batch * config_.model.seq_len;
  progress.samples = completed * config_.train.micro_batch;
  progress.seed = config_.train.seed;
  const RankPlace one_process{{1, 1, 0}, 0, 0};
  auto snapshot = snapshot_checkpoint(model, optimizer_state(optimizer), one_process, progress, config_yaml_);
  if (!snapshot.ok()) return snapshot.status();
  writer_->start(std::move(*snapshot), completed);
  writing_ = true;
  save.blocked_ms = ms_since(t0);
  save.step_ms = ms_since(start);
  result_.saves.push_back(save);
  return Status::Ok();
}

Status BenchSaves::record(std::optional<AsyncCheckpointWriter::Done> done) {
  if (!done) return Status::Ok();
  writing_ = false;
  if (!done->dir.ok()) return done->dir.status();
  BenchSave& save = result_.saves.back();  // the only save in flight is the newest
  auto bytes = folder_bytes(Env::posix(), *done->dir);
  if (!bytes.ok()) return bytes.status();
  save.write_ms = done->write_ms;
  save.bytes = *bytes;
  save.write_mb_s = static_cast<double>(save.bytes) / 1e6 / (save.write_ms / 1e3);
  const FileTimes t = env_.take();  // the only save in flight was this one
  save.append_ms = t.append_ms;
  save.fsync_ms = t.fsync_ms;
  save.fs_other_ms = t.other_ms;
  save.compute_ms = std::max(0.0, save.write_ms - t.append_ms - t.fsync_ms - t.other_ms);
  return Status::Ok();
}

StatusOr<BenchCheckpoints> BenchSaves::finish() {
  DTRN_RETURN_IF_ERROR(record(writer_->wait()));
  result_.quiet_step_ms = median(quiet_ms_);
  result_.quiet_steps = static_cast<int64_t>(quiet_ms_.size());
  result_.writing_step_ms = median(writing_ms_);
  result_.writing_steps = static_cast<int64_t>(writing_ms_.size());
  for (const BenchSave& s : result_.saves) result_.disk_bytes = std::max(result_.disk_bytes, s.bytes);
  if (result_.disk_bytes > 0) {
    auto mb_s = sequential_write_mb_s(Env::posix(), result_.run_dir + "/disk-bandwidth.tmp", result_.disk_bytes);
    if (!mb_s.ok()) return mb_s.status();
    result_.disk_mb_s = *mb_s;
  }
  return result_;
}

}  // namespace dtrn::train
