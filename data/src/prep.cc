#include "dtrn/data/prep.h"

#include <fnmatch.h>
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
              SplitStats* stats, std::vector<std::string>* written)
      : dir_(std::move(dir)),
        split_(std::move(split)),
        identity_(tokenizer.identity()),
        eot_(static_cast<uint16_t>(tokenizer.eot_id())),
        shard_tokens_(shard_tokens),
        stats_(stats),
        written_(written) {}

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
    written_->push_back(path);
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
  std::vector<std::string>* written_;
  std::vector<uint16_t> buffer_;
};

bool is_shard_name(const std::string& name) {
  return (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin");
}

Status run(const Tokenizer& tokenizer, const PrepOptions& options, DatasetMeta* meta,
           std::vector<std::string>* written) {
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

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) return Status::IoError(options.out_dir + ": " + ec.message());
  const std::string meta_path = options.out_dir + "/" + kMetaFileName;
  if (::unlink(meta_path.c_str()) != 0 && errno != ENOENT) return errno_status(meta_path, errno);

  meta->tokenizer_name = tokenizer.name();
  meta->tokenizer_identity = tokenizer.identity();
  meta->vocab_size = tokenizer.vocab_size();
  meta->eot_id = tokenizer.eot_id();
  meta->tokenizer_files = tokenizer.sources();
  meta->val_patterns = patterns;
  ShardWriter train(options.out_dir, "train", tokenizer, options.shard_tokens, &meta->train,
                    written);
  ShardWriter val(options.out_dir, "val", tokenizer, options.shard_tokens, &meta->val, written);

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

  // Shards of an earlier run that this one did not rewrite would only confuse a reader.
  auto is_current = [&](const std::string& name) {
    for (const SplitStats* split : {&meta->train, &meta->val}) {
      for (const ShardEntry& e : split->shards) {
        if (e.file == name) return true;
      }
    }
    return false;
  };
  for (const auto& entry : fs::directory_iterator(options.out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_shard_name(name) && !is_current(name)) fs::remove(entry.path(), ec);
  }
  return write_file_atomic(meta_path, meta_to_json(*meta));
}

}  // namespace

StatusOr<DatasetMeta> prepare_dataset(const Tokenizer& tokenizer, const PrepOptions& options) {
  DatasetMeta meta;
  std::vector<std::string> written;
  Status status = run(tokenizer, options, &meta, &written);
  if (!status.ok()) {
    for (const std::string& path : written) {
      std::error_code ec;
      fs::remove(path, ec);
    }
    return status;
  }
  return meta;
}

}  // namespace dtrn::data
