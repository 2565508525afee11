#include "dtrn/train/safetensors.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "dtrn/runtime/check.h"
#include "file_io.h"

namespace dtrn::train {
namespace {

using Json = nlohmann::ordered_json;  // keeps the file order of the header

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and dtrn copies it as is");

// The reference reader refuses larger headers; so does dtrn, before allocating one.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

const char* format_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return "F64";
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

std::optional<DType> parse_dtype(const std::string& name) {
  for (DType d : {DType::kF64, DType::kF32, DType::kBF16, DType::kI32, DType::kI64}) {
    if (name == format_dtype(d)) return d;
  }
  return std::nullopt;
}

// One header entry, checked against itself and the size of the data section.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

StatusOr<Entry> parse_entry(const std::string& path, const std::string& name, const Json& v,
                            uint64_t data_bytes) {
  const std::string where = path + ": tensor '" + name + "': ";
  if (!v.is_object()) return Status::DataLoss(where + "header entry is not a JSON object");
  auto dtype_it = v.find("dtype");
  auto shape_it = v.find("shape");
  auto offsets_it = v.find("data_offsets");
  if (dtype_it == v.end() || !dtype_it->is_string()) {
    return Status::DataLoss(where + "missing or non-string \"dtype\"");
  }
  std::optional<DType> dtype = parse_dtype(dtype_it->get<std::string>());
  if (!dtype) {
    return Status::DataLoss(where + "unknown dtype '" + dtype_it->get<std::string>() +
                            "' (dtrn reads F64, F32, BF16, I32, I64)");
  }
  if (shape_it == v.end() || !shape_it->is_array()) {
    return Status::DataLoss(where + "missing or non-array \"shape\"");
  }
  Entry e{name, *dtype, {}, 0, 0};
  uint64_t nbytes = dtype_size(*dtype);
  for (const Json& d : *shape_it) {
    if (!d.is_number_unsigned()) return Status::DataLoss(where + "\"shape\" holds " + d.dump());
    const uint64_t n = d.get<uint64_t>();
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(nbytes, n, &nbytes)) {
      return Status::DataLoss(where + "shape " + shape_it->dump() + " is too large");
    }
    e.shape.push_back(static_cast<int64_t>(n));
  }
  if (offsets_it == v.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return Status::DataLoss(where + "\"data_offsets\" must be two non-negative integers");
  }
  e.begin = (*offsets_it)[0].get<uint64_t>();
  e.end = (*offsets_it)[1].get<uint64_t>();
  const std::string offsets =
      "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) return Status::DataLoss(where + offsets + " run backwards");
  if (e.end > data_bytes) {
    return Status::DataLoss(where + offsets + " run past the end of the data (" +
                            std::to_string(data_bytes) + " bytes)");
  }
  if (e.end - e.begin != nbytes) {
    return Status::DataLoss(where + offsets + " hold " + std::to_string(e.end - e.begin) +
                            " bytes, but shape " + shape_str(e.shape) + " of " +
                            format_dtype(e.dtype) + " needs " + std::to_string(nbytes));
  }
  return e;
}

// The format has no holes and no overlaps: in offset order each tensor starts where the previous
// ends, and the last one ends at the end of the file.
Status check_contiguous(const std::string& path, const std::vector<Entry>& sorted,
                        uint64_t data_bytes) {
  uint64_t at = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : sorted) {
    if (e.begin < at) {
      return Status::DataLoss(path + ": tensor '" + e.name + "' overlaps tensor '" +
                              previous->name + "'");
    }
    if (e.begin > at) {
      return Status::DataLoss(path + ": tensor '" + e.name + "' starts at byte " +
                              std::to_string(e.begin) + " of the data, leaving a hole after byte " +
                              std::to_string(at));
    }
    at = e.end;
    previous = &e;
  }
  if (at != data_bytes) {
    return Status::DataLoss(path + ": " + std::to_string(data_bytes - at) +
                            " bytes after the last tensor's data");
  }
  return Status::Ok();
}

}  // namespace

const Tensor* SafetensorsContents::find(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

StatusOr<SafetensorsEncoding> encode_safetensors(
    const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  SafetensorsEncoding out;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == kMetadataKey || !names.insert(name).second) {
      return Status::InvalidArgument(path + ": tensor name '" + name + "' is reserved or repeated");
    }
    if (!tensor.defined())
      return Status::InvalidArgument(path + ": tensor '" + name + "' is undefined");
    out.host.push_back(tensor.detach().to(Device::cpu()).contiguous());
    const uint64_t nbytes = out.host.back().nbytes();
    header[name] = {{"dtype", format_dtype(tensor.dtype())},
                    {"shape", tensor.shape()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // names or metadata that are not UTF-8
    return Status::InvalidArgument(path + ": cannot encode the header: " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_len = text.size();  // little-endian host: the bytes are the LE encoding
  out.header.assign(reinterpret_cast<const char*>(&header_len), sizeof(header_len));
  out.header += text;
  return out;
}

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata,
                         std::string* sha256_hex) {
  auto encoded = encode_safetensors(path, tensors, metadata);
  if (!encoded.ok()) return encoded.status();
  auto file = HashingWriter::create(Env::posix(), path);
  if (!file.ok()) return file.status();
  DTRN_RETURN_IF_ERROR(file->append(encoded->header));
  for (const Tensor& t : encoded->host) {
    if (t.nbytes() > 0) DTRN_RETURN_IF_ERROR(file->append(t.raw_data(), t.nbytes()));
  }
  DTRN_RETURN_IF_ERROR(file->finish());
  if (sha256_hex) *sha256_hex = file->sha256_hex();
  return Status::Ok();
}

StatusOr<SafetensorsContents> read_safetensors(const std::string& path, std::string* sha256_hex,
                                               const TensorFilter& wanted) {
  DTRN_CHECK(!(sha256_hex && wanted), "read_safetensors: a whole-file digest needs every tensor read");
  auto opened = ReadableFile::open(path, /*hash=*/sha256_hex != nullptr);
  if (!opened.ok()) return opened.status();
  ReadableFile& file = **opened;
  const uint64_t size = file.size();
  if (size < 8) {
    return Status::DataLoss(path + ": truncated: " + std::to_string(size) +
                            " bytes, too short for the 8-byte header length");
  }
  uint64_t header_len = 0;
  DTRN_RETURN_IF_ERROR(file.read(&header_len, sizeof(header_len)));
  if (header_len > size - 8) {
    return Status::DataLoss(path + ": header length " + std::to_string(header_len) +
                            " runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  if (header_len > kMaxHeaderBytes) {
    return Status::DataLoss(path + ": header length " + std::to_string(header_len) +
                            " is over the " + std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  std::string text(header_len, '\0');
  DTRN_RETURN_IF_ERROR(file.read(text.data(), text.size()));
  Json header;
  try {
    header = Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return Status::DataLoss(path + ": bad header JSON: " + e.what());
  }
  if (!header.is_object()) return Status::DataLoss(path + ": the header is not a JSON object");

  const uint64_t data_bytes = size - 8 - header_len;
  SafetensorsContents contents;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) return Status::DataLoss(path + ": __metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) {
          return Status::DataLoss(path + ": __metadata__ value of '" + k + "' is not a string");
        }
        contents.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto entry = parse_entry(path, key, value, data_bytes);
    if (!entry.ok()) return entry.status();
    entries.push_back(std::move(*entry));
  }
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  DTRN_RETURN_IF_ERROR(check_contiguous(path, entries, data_bytes));

  for (const Entry& e : entries) {
    if (wanted && !wanted(e.name, e.shape, contents.metadata)) {
      DTRN_RETURN_IF_ERROR(file.skip(e.end - e.begin));
      contents.skipped.emplace_back(e.name, e.shape);
      continue;
    }
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
    if (t.nbytes() > 0) DTRN_RETURN_IF_ERROR(file.read(t.raw_data(), t.nbytes()));
    contents.tensors.emplace_back(e.name, std::move(t));
  }
  if (sha256_hex) *sha256_hex = file.sha256_hex();
  return contents;
}

}  // namespace dtrn::train
