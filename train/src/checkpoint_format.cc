#include "checkpoint_format.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "dtrn/runtime/sha256.h"
#include "dtrn/train/safetensors.h"
#include "file_io.h"

namespace dtrn::train {
namespace {

using Json = nlohmann::ordered_json;
constexpr char kFormatName[] = "dtrn-checkpoint";
constexpr char kSlicesKey[] = "dtrn.slices";

std::string sha256_of(const void* data, size_t size) {
  Sha256 sha;
  sha.update(data, size);
  return sha.hex_digest();
}

// The digest of each tensor's bytes, on up to four threads: a 360m model's state is 4.4 GB, about
// two seconds a core with the SHA extensions, and the save or the verification waits for every
// digest.
std::vector<std::string> sha256_of_each(const std::vector<Tensor>& tensors) {
  std::vector<std::string> out(tensors.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < tensors.size(); i = next++)
      out[i] = sha256_of(tensors[i].raw_data(), tensors[i].nbytes());
  };
  const size_t threads =
      std::min<size_t>({4, tensors.size(), std::max(1u, std::thread::hardware_concurrency())});
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return out;
}

// The manifest's fields in file order, without its trailing "checksum".
Json manifest_body(const Manifest& m) {
  const TrainProgress& p = m.progress;
  Json monitor = Json::array();
  for (const MonitorRun& r : p.monitor) monitor.push_back({{"layer", r.layer}, {"low", r.low}, {"high", r.high}});
  Json shards = Json::array();
  for (const ShardEntry& s : m.shards) {
    shards.push_back({{"file", s.file}, {"rank", s.rank}, {"bytes", s.bytes}, {"header_sha256", s.header_sha256}});
  }
  return {{"format", kFormatName},
          {"version", kCheckpointVersion},
          {"step", p.step},
          {"tokens", p.tokens},
          {"samples", p.samples},
          {"optimizer_step", m.optimizer_step},
          {"sampler", {{"epoch", p.sampler.epoch}, {"next_sample", p.sampler.next_sample}}},
          {"rng", {{"seed", p.seed}}},
          {"monitor", monitor},
          // Doubles are written with 17 significant digits, so they read back bit for bit.
          {"routing", {{"initialized", m.router.initialized}, {"bias", m.router.bias},
                       {"multiplier", m.router.multiplier}}},
          {"layout", {{"dp", m.layout.dp}, {"tp", m.layout.tp}, {"zero", m.layout.zero}}},
          {"save_id", m.save_id},
          {"shards", shards},
          {"model", m.model_metadata},
          {"config", m.config_yaml}};
}

// Reads `key` of `obj` as T (a non-negative integer or a string); the error names the file and key.
template <typename T>
Status get_field(const std::string& path, const Json& obj, const std::string& key, T* out) {
  auto it = obj.find(key);
  bool ok = it != obj.end();
  if constexpr (std::is_same_v<T, std::string>) {
    ok = ok && it->is_string();
  } else {
    ok = ok && it->is_number_unsigned();
  }
  if (!ok) return Status::DataLoss(path + ": missing or invalid \"" + key + "\"");
  *out = it->template get<T>();
  return Status::Ok();
}

StatusOr<const Json*> get_object(const std::string& path, const Json& obj, const std::string& key,
                                 bool array = false) {
  auto it = obj.find(key);
  if (it == obj.end() || (array ? !it->is_array() : !it->is_object())) {
    return Status::DataLoss(path + ": missing or invalid \"" + key + "\"");
  }
  return &*it;
}

bool plain_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name != kManifestFile;
}

}  // namespace

std::string manifest_text(const Manifest& m) {
  Json j = manifest_body(m);
  j["checksum"] = sha256_of(j.dump().data(), j.dump().size());
  return j.dump(2) + "\n";
}

StatusOr<Manifest> parse_manifest(const std::string& path, const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss(path + ": bad JSON: " + e.what());
  }
  if (!j.is_object()) return Status::DataLoss(path + ": not a JSON object");
  std::string format;
  int64_t version = 0;
  DTRN_RETURN_IF_ERROR(get_field(path, j, "format", &format));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "version", &version));
  if (format != kFormatName) return Status::DataLoss(path + ": format '" + format + "' is not " + kFormatName);
  if (version == 1) {
    return Status::FailedPrecondition(
        path + ": a version 1 (single-process) checkpoint; this dtrn reads version " +
        std::to_string(kCheckpointVersion) + " (docs/checkpoints.md: export it with the dtrn that wrote it and "
        "start from the weights with --init-from)");
  }
  if (version != kCheckpointVersion) {
    return Status::DataLoss(path + ": format version " + std::to_string(version) + ", this dtrn reads version " +
                            std::to_string(kCheckpointVersion));
  }
  std::string checksum;
  DTRN_RETURN_IF_ERROR(get_field(path, j, "checksum", &checksum));
  j.erase("checksum");
  if (sha256_of(j.dump().data(), j.dump().size()) != checksum) {
    return Status::DataLoss(path + ": checksum mismatch: the manifest is corrupt");
  }
  Manifest m;
  TrainProgress& p = m.progress;
  DTRN_RETURN_IF_ERROR(get_field(path, j, "step", &p.step));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "tokens", &p.tokens));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "samples", &p.samples));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "optimizer_step", &m.optimizer_step));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "save_id", &m.save_id));
  DTRN_RETURN_IF_ERROR(get_field(path, j, "config", &m.config_yaml));
  auto model = get_object(path, j, "model");
  if (!model.ok()) return model.status();
  for (const auto& [k, v] : (*model)->items()) {
    if (!v.is_string()) return Status::DataLoss(path + ": \"model\" value of '" + k + "' is not a string");
    m.model_metadata[k] = v.get<std::string>();
  }
  auto sampler = get_object(path, j, "sampler");
  if (!sampler.ok()) return sampler.status();
  DTRN_RETURN_IF_ERROR(get_field(path, **sampler, "epoch", &p.sampler.epoch));
  DTRN_RETURN_IF_ERROR(get_field(path, **sampler, "next_sample", &p.sampler.next_sample));
  auto rng = get_object(path, j, "rng");
  if (!rng.ok()) return rng.status();
  DTRN_RETURN_IF_ERROR(get_field(path, **rng, "seed", &p.seed));
  auto layout = get_object(path, j, "layout");
  if (!layout.ok()) return layout.status();
  DTRN_RETURN_IF_ERROR(get_field(path, **layout, "dp", &m.layout.dp));
  DTRN_RETURN_IF_ERROR(get_field(path, **layout, "tp", &m.layout.tp));
  DTRN_RETURN_IF_ERROR(get_field(path, **layout, "zero", &m.layout.zero));
  auto monitor = get_object(path, j, "monitor", true);
  if (!monitor.ok()) return monitor.status();
  for (const Json& r : **monitor) {
    MonitorRun run;
    DTRN_RETURN_IF_ERROR(get_field(path, r, "layer", &run.layer));
    DTRN_RETURN_IF_ERROR(get_field(path, r, "low", &run.low));
    DTRN_RETURN_IF_ERROR(get_field(path, r, "high", &run.high));
    p.monitor.push_back(run);
  }
  if (auto r = j.find("routing"); r != j.end()) {
    const bool ok = r->is_object() && r->contains("initialized") && (*r)["initialized"].is_boolean() &&
                    r->contains("bias") && (*r)["bias"].is_array() && r->contains("multiplier") &&
                    (*r)["multiplier"].is_array();
    if (!ok) return Status::DataLoss(path + ": invalid \"routing\"");
    try {
      m.router.initialized = (*r)["initialized"].get<bool>();
      m.router.bias = (*r)["bias"].get<std::vector<double>>();
      m.router.multiplier = (*r)["multiplier"].get<std::vector<double>>();
    } catch (const nlohmann::json::exception&) {
      return Status::DataLoss(path + ": invalid \"routing\"");
    }
  }
  auto shards = get_object(path, j, "shards", true);
  if (!shards.ok()) return shards.status();
  for (const Json& s : **shards) {
    ShardEntry e;
    DTRN_RETURN_IF_ERROR(get_field(path, s, "file", &e.file));
    DTRN_RETURN_IF_ERROR(get_field(path, s, "rank", &e.rank));
    DTRN_RETURN_IF_ERROR(get_field(path, s, "bytes", &e.bytes));
    DTRN_RETURN_IF_ERROR(get_field(path, s, "header_sha256", &e.header_sha256));
    // Only plain names: a manifest never points outside its folder.
    if (!plain_name(e.file)) return Status::DataLoss(path + ": invalid shard file name '" + e.file + "'");
    m.shards.push_back(e);
  }
  if (m.shards.empty()) return Status::DataLoss(path + ": lists no shard");
  return m;
}

StatusOr<Manifest> read_manifest(const std::string& checkpoint_dir) {
  const std::string path = checkpoint_dir + "/" + kManifestFile;
  auto text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_manifest(path, *text);
}

std::string shard_file_name(int64_t rank, int64_t world, const std::string& save_id) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05lld-of-%05lld.", static_cast<long long>(rank),
                static_cast<long long>(world));
  return name + save_id + ".safetensors";
}

StatusOr<ShardEntry> write_shard(Env* env, const std::string& path, int64_t rank,
                                 const std::vector<TensorSlice>& slices) {
  Json described = Json::object();
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, int64_t> seen;  // a rank may hold several boxes of one tensor (ZeRO-1 pieces)
  std::vector<Tensor> hosts;
  for (const TensorSlice& s : slices) {
    if (s.data.dtype() != DType::kF32 || !s.data.device().is_cpu() || s.offsets.size() != s.global_shape.size() ||
        s.data.shape().size() != s.global_shape.size()) {
      return Status::Internal(path + ": slice '" + s.name + "' is not a host f32 box of its global shape");
    }
    hosts.push_back(s.data.contiguous());
  }
  const std::vector<std::string> digests = sha256_of_each(hosts);
  for (size_t i = 0; i < slices.size(); ++i) {
    const TensorSlice& s = slices[i];
    const int64_t nth = seen[s.name]++;
    const std::string key = nth == 0 ? s.name : s.name + "#" + std::to_string(nth);
    described[key] = {
        {"global_shape", s.global_shape}, {"offsets", s.offsets}, {"sha256", digests[i]}};
    if (nth > 0) described[key]["tensor"] = s.name;
    tensors.emplace_back(key, hosts[i]);
  }
  auto encoded = encode_safetensors(path, tensors, {{"format", "pt"}, {kSlicesKey, described.dump()}});
  if (!encoded.ok()) return encoded.status();
  // The tensors carry their own digests and the manifest the header's: no digest of the whole file.
  auto file = HashingWriter::create(env, path, /*hash=*/false);
  if (!file.ok()) return file.status();
  DTRN_RETURN_IF_ERROR(file->append(encoded->header));
  for (const Tensor& t : encoded->host) {
    if (t.nbytes() > 0) DTRN_RETURN_IF_ERROR(file->append(t.raw_data(), t.nbytes()));
  }
  DTRN_RETURN_IF_ERROR(file->finish());
  ShardEntry e;
  e.file = path.substr(path.find_last_of('/') + 1);
  e.rank = rank;
  e.bytes = file->bytes();
  e.header_sha256 = sha256_of(encoded->header.data(), encoded->header.size());
  return e;
}

StatusOr<std::vector<TensorSlice>> read_shard(const std::string& dir, const ShardEntry& entry,
                                              const SliceFilter& wanted, std::vector<SliceBox>* skipped) {
  const std::string path = dir + "/" + entry.file;
  auto size = Env::posix()->file_size(path);
  if (!size.ok()) return Status::DataLoss(size.status().message() + " (a shard the manifest names)");
  if (*size != entry.bytes) {
    return Status::DataLoss(path + ": " + std::to_string(*size) + " bytes, the manifest says " +
                            std::to_string(entry.bytes) + ": the shard is truncated or damaged");
  }
  // The filter sees each tensor as its slice description names it; a tensor without a readable
  // description is read, so that the checks below report it.
  Json descriptions;
  TensorFilter filter;
  if (wanted) {
    filter = [&](const std::string& key, const Shape& shape, const std::map<std::string, std::string>& metadata) {
      if (descriptions.is_null()) {
        auto it = metadata.find(kSlicesKey);
        descriptions = it == metadata.end() ? Json::object() : Json::parse(it->second, nullptr, false);
      }
      auto d = descriptions.is_object() ? descriptions.find(key) : descriptions.end();
      if (d == descriptions.end() || !d->is_object()) return true;
      try {
        return wanted(d->value("tensor", key), d->at("offsets").get<std::vector<int64_t>>(), shape);
      } catch (const nlohmann::json::exception&) {
        return true;
      }
    };
  }
  auto contents = read_safetensors(path, nullptr, filter);
  if (!contents.ok()) return contents.status();
  // The header as written: 8-byte length + JSON; re-read it rather than re-encode it.
  auto opened = ReadableFile::open(path, /*hash=*/false);
  if (!opened.ok()) return opened.status();
  uint64_t header_len = 0;
  DTRN_RETURN_IF_ERROR((*opened)->read(&header_len, sizeof header_len));
  std::string header(sizeof header_len + header_len, '\0');
  std::memcpy(header.data(), &header_len, sizeof header_len);
  DTRN_RETURN_IF_ERROR((*opened)->read(header.data() + sizeof header_len, header_len));
  if (sha256_of(header.data(), header.size()) != entry.header_sha256) {
    return Status::DataLoss(path + ": header sha256 mismatch with the manifest: the shard is corrupt");
  }
  auto described = contents->metadata.find(kSlicesKey);
  if (described == contents->metadata.end()) return Status::DataLoss(path + ": no \"dtrn.slices\" metadata");
  Json slices = Json::parse(described->second, nullptr, false);
  if (!slices.is_object()) return Status::DataLoss(path + ": \"dtrn.slices\" is not a JSON object");
  for (const auto& [key, shape] : contents->skipped) {
    const Json& d = slices[key];  // the filter declined only described tensors
    try {
      if (skipped) skipped->push_back({d.value("tensor", key), d.at("global_shape").get<Shape>(),
                                       d.at("offsets").get<std::vector<int64_t>>(), shape});
    } catch (const nlohmann::json::exception& e) {
      return Status::DataLoss(path + ": tensor '" + key + "': bad description: " + e.what());
    }
  }
  std::vector<Tensor> read;
  for (const auto& named : contents->tensors) read.push_back(named.second);
  const std::vector<std::string> digests = sha256_of_each(read);
  std::vector<TensorSlice> out;
  for (size_t i = 0; i < contents->tensors.size(); ++i) {
    auto& [name, tensor] = contents->tensors[i];
    auto d = slices.find(name);
    if (d == slices.end() || !d->is_object()) return Status::DataLoss(path + ": tensor '" + name + "' is not described");
    TensorSlice s{name, {}, {}, tensor};
    try {
      s.name = d->value("tensor", name);
      s.global_shape = d->at("global_shape").get<Shape>();
      s.offsets = d->at("offsets").get<std::vector<int64_t>>();
      if (digests[i] != d->at("sha256").get<std::string>()) {
        return Status::DataLoss(path + ": tensor '" + name + "': sha256 mismatch: the shard is corrupt");
      }
    } catch (const nlohmann::json::exception& e) {
      return Status::DataLoss(path + ": tensor '" + name + "': bad description: " + e.what());
    }
    if (tensor.dtype() != DType::kF32 || s.offsets.size() != s.global_shape.size() ||
        tensor.shape().size() != s.global_shape.size()) {
      return Status::DataLoss(path + ": tensor '" + name + "': not an f32 box of its global shape");
    }
    for (size_t k = 0; k < s.offsets.size(); ++k) {
      if (s.offsets[k] < 0 || s.offsets[k] + tensor.shape()[k] > s.global_shape[k]) {
        return Status::DataLoss(path + ": tensor '" + name + "': slice outside its global shape");
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace dtrn::train
