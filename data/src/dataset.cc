#include "dtrn/data/dataset.h"

namespace dtrn::data {
namespace {

// Ids the tokenizer of meta.json cannot have made (a shard written by another tool, a bit flip made
// before the checksum) would otherwise reach the model and fail deep inside an embedding lookup: caught
// here, once per open, naming the shard and the offset.
Status check_token_ids(const ShardFile& shard, uint32_t vocab_size, const std::string& meta_path) {
  const uint16_t* tokens = shard.tokens();
  for (uint64_t i = 0; i < shard.num_tokens(); ++i) {
    if (tokens[i] >= vocab_size) {
      return Status::DataLoss(shard.path() + ": token id " + std::to_string(tokens[i]) + " at token offset " +
                              std::to_string(i) + " (byte " + std::to_string(kShardHeaderBytes + 2 * i) +
                              ") is not below the vocabulary size " + std::to_string(vocab_size) + " of " +
                              meta_path);
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::shared_ptr<const TokenDataset>> TokenDataset::Open(const std::string& dir,
                                                                 const std::string& split,
                                                                 const DatasetOptions& options) {
  auto meta = read_meta(dir);
  if (!meta.ok()) return meta.status();
  const std::string meta_path = dir + "/" + kMetaFileName;
  const SplitStats* stats = meta->split(split);
  if (stats == nullptr)
    return Status::InvalidArgument("unknown split '" + split + "' (want train or val)");
  if (!options.expected_tokenizer_identity.empty() &&
      meta->tokenizer_identity != options.expected_tokenizer_identity) {
    return Status::FailedPrecondition(meta_path + ": made by another tokenizer (identity " +
                                      meta->tokenizer_identity.substr(0, 12) + "..., expected " +
                                      options.expected_tokenizer_identity.substr(0, 12) + "...)");
  }
  if (stats->shards.empty())
    return Status::FailedPrecondition(meta_path + ": split '" + split + "' has no shards");

  std::shared_ptr<TokenDataset> dataset(new TokenDataset());
  dataset->dir_ = dir;
  dataset->split_ = split;
  for (const ShardEntry& entry : stats->shards) {
    const std::string path = dir + "/" + entry.file;
    auto shard = ShardFile::Open(path);
    if (!shard.ok()) return shard.status();
    if (shard->tokenizer_identity() != meta->tokenizer_identity) {
      return Status::FailedPrecondition(path + ": made by another tokenizer than " + meta_path +
                                        " names (shard " +
                                        shard->tokenizer_identity().substr(0, 12) + "..., meta " +
                                        meta->tokenizer_identity.substr(0, 12) + "...)");
    }
    if (shard->num_tokens() != entry.tokens) {
      return Status::DataLoss(path + ": holds " + std::to_string(shard->num_tokens()) +
                              " tokens, " + meta_path + " says " + std::to_string(entry.tokens));
    }
    if (options.verify_checksums && shard->sha256() != entry.sha256) {
      return Status::DataLoss(path + ": checksum mismatch (sha256 differs from " + meta_path +
                              "): corrupt");
    }
    DTRN_RETURN_IF_ERROR(check_token_ids(*shard, meta->vocab_size, meta_path));
    dataset->num_tokens_ += shard->num_tokens();
    dataset->shards_.push_back(std::move(shard).value());
  }
  dataset->meta_ = std::move(meta).value();
  return std::shared_ptr<const TokenDataset>(std::move(dataset));
}

std::vector<int32_t> TokenDataset::all_tokens() const {
  std::vector<int32_t> out;
  out.reserve(num_tokens_);
  for (const auto& shard : shards_) out.insert(out.end(), shard.tokens(), shard.tokens() + shard.num_tokens());
  return out;
}

}  // namespace dtrn::data
