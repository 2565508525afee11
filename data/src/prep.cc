#include "dtrn/data/prep.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "dtrn/data/shard.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/runtime/sha256.h"

namespace dtrn::data {

namespace fs = std::filesystem;

std::vector<std::string> default_val_patterns() {
  return {"carroll-alice", "shakespeare-macbeth", "chesterton-thursday", "sotu/201*", "sotu/202*"};
}

bool matches_val_pattern(const std::string& pattern, const std::string& path) {
  auto matches = [&](const std::string& name) {
    if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
    return name.size() > 4 && name.ends_with(".txt") &&
           fnmatch(pattern.c_str(), name.substr(0, name.size() - 4).c_str(), 0) == 0;
  };
  if (matches(path)) return true;
  for (size_t slash = path.find('/'); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    if (matches(path.substr(slash + 1))) return true;
  }
  return false;
}

namespace {

// Inputs -> document paths: files as given, folders as their .txt files in sorted order.
StatusOr<std::vector<std::string>> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> docs;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    if (ec || !fs::exists(st)) return Status::NotFound(input + ": No such file or directory");
    if (!fs::is_directory(st)) {
      docs.push_back(input);
      continue;
    }
    std::vector<std::string> found;
    for (auto it = fs::recursive_directory_iterator(input, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (it->is_regular_file() && it->path().extension() == ".txt")
        found.push_back(it->path().string());
    }
    if (ec) return Status::IoError(input + ": " + ec.message());
    if (found.empty()) return Status::InvalidArgument(input + ": folder holds no .txt files");
    std::sort(found.begin(), found.end());
    docs.insert(docs.end(), found.begin(), found.end());
  }
  if (docs.empty()) return Status::InvalidArgument("no input documents");
  return docs;
}

struct EncodedDocument {
  Status status;
  std::vector<uint16_t> tokens;
  uint64_t bytes = 0;
  std::string sha256;
};

EncodedDocument encode_document(const Tokenizer& tokenizer, const std::string& path) {
  EncodedDocument doc;
  auto text = read_file(path);
  if (!text.ok()) {
    doc.status = text.status();
    return doc;
  }
  if (text->empty()) {
    doc.status = Status::InvalidArgument(path + ": empty document");
    return doc;
  }
  doc.bytes = text->size();
  doc.sha256 = sha256_hex(*text);
  std::vector<uint32_t> ids = tokenizer.encode(*text);
  doc.tokens.assign(ids.begin(), ids.end());  // ids < vocab_size <= 65536 (FromVocab checks)
  return doc;
}

// Encodes documents on `threads` threads and hands them out in input order. Workers run at most
// kAhead documents past the consumer, which bounds memory on large corpora.
class DocumentPool {
 public:
  DocumentPool(const Tokenizer& tokenizer, const std::vector<std::string>& paths, int threads)
      : tokenizer_(tokenizer), paths_(paths), slots_(paths.size()) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~DocumentPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }

  // Document i, waiting until it is encoded; call with i = 0, 1, 2, ...
  EncodedDocument take(size_t i) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return slots_[i].has_value(); });
    EncodedDocument doc = std::move(*slots_[i]);
    slots_[i].reset();
    consumed_ = i + 1;
    cv_.notify_all();
    return doc;
  }

 private:
  static constexpr size_t kAhead = 64;

  void work() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock,
                 [&] { return stop_ || next_ >= paths_.size() || next_ < consumed_ + kAhead; });
        if (stop_ || next_ >= paths_.size()) return;
        i = next_++;
      }
      EncodedDocument doc = encode_document(tokenizer_, paths_[i]);
      {
        std::lock_guard<std::mutex> lock(mu_);
        slots_[i] = std::move(doc);
      }
      cv_.notify_all();
    }
  }

  const Tokenizer& tokenizer_;
  const std::vector<std::string>& paths_;
  std::vector<std::optional<EncodedDocument>> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t next_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Appends one split's stream and cuts it into shards.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, const Tokenizer& tokenizer, uint64_t shard_tokens,
              SplitStats* stats)
      : dir_(std::move(dir)),
        split_(std::move(split)),
        identity_(tokenizer.identity()),
        eot_(static_cast<uint16_t>(tokenizer.eot_id())),
        shard_tokens_(shard_tokens),
        stats_(stats) {}

  Status add(const EncodedDocument& doc) {
    stats_->documents += 1;
    stats_->bytes += doc.bytes;
    stats_->tokens += 1 + doc.tokens.size();
    DTRN_RETURN_IF_ERROR(append(&eot_, 1));
    return append(doc.tokens.data(), doc.tokens.size());
  }

  Status finish() { return buffer_.empty() ? Status::Ok() : flush(); }

 private:
  Status append(const uint16_t* tokens, size_t n) {
    while (n > 0) {
      size_t take = std::min<uint64_t>(n, shard_tokens_ - buffer_.size());
      buffer_.insert(buffer_.end(), tokens, tokens + take);
      tokens += take;
      n -= take;
      if (buffer_.size() == shard_tokens_) DTRN_RETURN_IF_ERROR(flush());
    }
    return Status::Ok();
  }

  Status flush() {
    char name[64];
    std::snprintf(name, sizeof name, "%s_%06zu.bin", split_.c_str(), stats_->shards.size());
    const std::string path = dir_ + "/" + name;
    auto sha = write_shard(path, buffer_, identity_);
    if (!sha.ok()) return sha.status();
    stats_->shards.push_back({name, buffer_.size(), *sha});
    buffer_.clear();
    return Status::Ok();
  }

  std::string dir_, split_, identity_;
  uint16_t eot_;
  uint64_t shard_tokens_;
  SplitStats* stats_;
  std::vector<uint16_t> buffer_;
};

bool is_shard_name(const std::string& name) {
  return (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin");
}

// Writes the dataset into `dir`, a fresh folder.
Status run(const Tokenizer& tokenizer, const PrepOptions& options, const std::string& dir, DatasetMeta* meta) {
  auto docs = expand_inputs(options.inputs);
  if (!docs.ok()) return docs.status();
  const std::vector<std::string> patterns =
      options.val_patterns.empty() ? default_val_patterns() : options.val_patterns;
  std::vector<bool> is_val(docs->size(), false);
  size_t num_val = 0;
  for (const std::string& pattern : patterns) {
    bool any = false;
    for (size_t i = 0; i < docs->size(); ++i) {
      if (matches_val_pattern(pattern, (*docs)[i])) is_val[i] = any = true;
    }
    if (!any && !options.val_patterns.empty()) {
      return Status::InvalidArgument("--val-docs '" + pattern + "' matches no input document");
    }
  }
  for (bool v : is_val) num_val += v;
  if (num_val == docs->size()) {
    return Status::InvalidArgument(
        "every input document matches --val-docs: no training data left");
  }
  if (options.shard_tokens == 0) return Status::InvalidArgument("shard size must be positive");

  meta->tokenizer_name = tokenizer.name();
  meta->tokenizer_identity = tokenizer.identity();
  meta->vocab_size = tokenizer.vocab_size();
  meta->eot_id = tokenizer.eot_id();
  meta->tokenizer_files = tokenizer.sources();
  meta->val_patterns = patterns;
  ShardWriter train(dir, "train", tokenizer, options.shard_tokens, &meta->train);
  ShardWriter val(dir, "val", tokenizer, options.shard_tokens, &meta->val);

  int threads = options.threads > 0 ? options.threads
                                    : int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<size_t>(size_t(threads), docs->size()));
  DocumentPool pool(tokenizer, *docs, threads);
  for (size_t i = 0; i < docs->size(); ++i) {
    EncodedDocument doc = pool.take(i);
    DTRN_RETURN_IF_ERROR(doc.status);
    DTRN_RETURN_IF_ERROR((is_val[i] ? val : train).add(doc));
    meta->documents.push_back(
        {(*docs)[i], is_val[i] ? "val" : "train", doc.bytes, doc.tokens.size(), doc.sha256});
  }
  DTRN_RETURN_IF_ERROR(train.finish());
  DTRN_RETURN_IF_ERROR(val.finish());
  DTRN_RETURN_IF_ERROR(write_file_atomic(dir + "/" + kMetaFileName, meta_to_json(*meta)));
  return sync_dir(dir);
}

// An existing output folder is replaced only when it is empty or holds nothing but what prep writes:
// anything else in it would be deleted by the swap.
Status check_replaceable(const std::string& out_dir) {
  std::error_code ec;
  if (!fs::exists(out_dir, ec)) return Status::Ok();
  if (!fs::is_directory(out_dir, ec)) return Status::InvalidArgument(out_dir + ": exists and is not a folder");
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != kMetaFileName && !is_shard_name(name)) {
      return Status::FailedPrecondition(out_dir + ": holds " + name +
                                        ", which dtrn prep did not write; --out must be a new or empty folder "
                                        "or an earlier dtrn prep output");
    }
  }
  return ec ? Status::IoError(out_dir + ": " + ec.message()) : Status::Ok();
}

// Puts the complete folder `staging` in place of `out_dir`. With an earlier dataset there, the two are
// exchanged in one atomic step (renameat2 RENAME_EXCHANGE) where the file system supports it, else
// the old one is renamed aside first; the old one is removed only once the new one is in place.
Status swap_in(const std::string& staging, const std::string& out_dir) {
  std::error_code ec;
  const std::string parent = fs::absolute(out_dir, ec).parent_path().string();
  if (!fs::exists(out_dir, ec)) {
    if (std::rename(staging.c_str(), out_dir.c_str()) != 0) return errno_status(out_dir, errno);
    return sync_dir(parent);
  }
  std::string old = staging;  // after an exchange, the staging name holds the old dataset
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, out_dir.c_str(), RENAME_EXCHANGE) != 0) {
    old = out_dir + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    if (std::rename(out_dir.c_str(), old.c_str()) != 0) return errno_status(out_dir, errno);
    if (std::rename(staging.c_str(), out_dir.c_str()) != 0) {
      const int err = errno;
      std::rename(old.c_str(), out_dir.c_str());
      return errno_status(out_dir, err);
    }
  }
  DTRN_RETURN_IF_ERROR(sync_dir(parent));
  fs::remove_all(old, ec);
  return Status::Ok();
}

}  // namespace

StatusOr<DatasetMeta> prepare_dataset(const Tokenizer& tokenizer, const PrepOptions& options) {
  DTRN_RETURN_IF_ERROR(check_replaceable(options.out_dir));
  std::string out = options.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const std::string staging = out + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(staging, ec);  // left by an earlier process that had our pid
  fs::create_directories(staging, ec);
  if (ec) return Status::IoError(staging + ": " + ec.message());
  DatasetMeta meta;
  Status status = run(tokenizer, options, staging, &meta);
  if (status.ok()) status = swap_in(staging, out);
  if (!status.ok()) {
    fs::remove_all(staging, ec);
    return status;
  }
  return meta;
}

}  // namespace dtrn::data
