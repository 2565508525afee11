#include "dtrn/data/dataset_meta.h"

#include <nlohmann/json.hpp>

#include "dtrn/runtime/file_io.h"

namespace dtrn::data {

using nlohmann::ordered_json;

const SplitStats* DatasetMeta::split(std::string_view name) const {
  if (name == "train") return &train;
  if (name == "val") return &val;
  return nullptr;
}

namespace {

ordered_json split_to_json(const SplitStats& s) {
  ordered_json shards = ordered_json::array();
  for (const ShardEntry& e : s.shards) {
    shards.push_back({{"file", e.file}, {"tokens", e.tokens}, {"sha256", e.sha256}});
  }
  return {{"documents", s.documents},
          {"tokens", s.tokens},
          {"bytes", s.bytes},
          {"bytes_per_token", s.bytes_per_token()},
          {"shards", shards}};
}

SplitStats split_from_json(const ordered_json& j) {
  SplitStats s;
  s.documents = j.at("documents").get<uint64_t>();
  s.tokens = j.at("tokens").get<uint64_t>();
  s.bytes = j.at("bytes").get<uint64_t>();
  for (const auto& e : j.at("shards")) {
    s.shards.push_back({e.at("file").get<std::string>(), e.at("tokens").get<uint64_t>(),
                        e.at("sha256").get<std::string>()});
  }
  return s;
}

}  // namespace

std::string meta_to_json(const DatasetMeta& meta) {
  ordered_json files = ordered_json::array();
  for (const auto& f : meta.tokenizer_files)
    files.push_back({{"name", f.name}, {"sha256", f.sha256}});
  ordered_json documents = ordered_json::array();
  for (const auto& d : meta.documents) {
    documents.push_back({{"path", d.path},
                         {"split", d.split},
                         {"bytes", d.bytes},
                         {"tokens", d.tokens},
                         {"sha256", d.sha256}});
  }
  ordered_json j;
  j["format"] = kMetaFormat;
  j["format_version"] = kMetaFormatVersion;
  j["tokenizer"] = {{"name", meta.tokenizer_name},
                    {"identity", meta.tokenizer_identity},
                    {"vocab_size", meta.vocab_size},
                    {"eot_id", meta.eot_id},
                    {"files", files}};
  j["val_docs"] = meta.val_patterns;
  j["splits"] = {{"train", split_to_json(meta.train)}, {"val", split_to_json(meta.val)}};
  j["documents"] = documents;
  return j.dump(2) + "\n";
}

StatusOr<DatasetMeta> read_meta(const std::string& dir) {
  const std::string path = dir + "/" + kMetaFileName;
  auto text = read_file(path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return Status::NotFound(path +
                              ": missing (not a `dtrn prep` output, or prep did not finish)");
    }
    return text.status();
  }
  try {
    ordered_json j = ordered_json::parse(*text);
    if (j.at("format").get<std::string>() != kMetaFormat) {
      return Status::DataLoss(path + ": format is not '" + std::string(kMetaFormat) + "'");
    }
    const int version = j.at("format_version").get<int>();
    if (version != kMetaFormatVersion) {
      return Status::DataLoss(path + ": format_version " + std::to_string(version) +
                              ", this build reads version " + std::to_string(kMetaFormatVersion));
    }
    DatasetMeta meta;
    const auto& t = j.at("tokenizer");
    meta.tokenizer_name = t.at("name").get<std::string>();
    meta.tokenizer_identity = t.at("identity").get<std::string>();
    meta.vocab_size = t.at("vocab_size").get<uint32_t>();
    meta.eot_id = t.at("eot_id").get<uint32_t>();
    for (const auto& f : t.at("files")) {
      meta.tokenizer_files.push_back(
          {f.at("name").get<std::string>(), f.at("sha256").get<std::string>()});
    }
    meta.val_patterns = j.at("val_docs").get<std::vector<std::string>>();
    meta.train = split_from_json(j.at("splits").at("train"));
    meta.val = split_from_json(j.at("splits").at("val"));
    for (const auto& d : j.at("documents")) {
      meta.documents.push_back({d.at("path").get<std::string>(), d.at("split").get<std::string>(),
                                d.at("bytes").get<uint64_t>(), d.at("tokens").get<uint64_t>(),
                                d.at("sha256").get<std::string>()});
    }
    return meta;
  } catch (const std::exception& e) {
    return Status::DataLoss(path + ": " + e.what());
  }
}

}  // namespace dtrn::data
