// The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON header mapping
// each tensor name to {dtype, shape, data_offsets} plus an optional "__metadata__" string map, then the
// raw little-endian tensor bytes. dtrn uses it for checkpoint shards and for `dtrn export`.
//
// Reading validates everything a corrupt or hostile file could get wrong (header length past the end,
// offsets out of range or overlapping, byte counts that do not match shape x dtype, unknown dtypes) and
// returns one Status naming the file and the problem.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dtrn/runtime/status.h"
#include "dtrn/runtime/tensor.h"

namespace dtrn::train {

struct SafetensorsContents {
  std::vector<std::pair<std::string, Tensor>> tensors;  // CPU tensors, file order
  std::map<std::string, std::string> metadata;
  std::vector<std::pair<std::string, Shape>> skipped;  // tensors a filter declined, file order
  const Tensor* find(const std::string& name) const;
};

// Writes CPU or device tensors (copied to the host) in their own dtype (F64, F32, BF16, I32, I64), in the
// given order, with the header padded by spaces to a multiple of 8 bytes as the reference writer does.
// Writes to `path` directly and fsyncs it; callers that need atomicity write into a temporary folder
// and rename it. `sha256_hex`, when given, receives the digest of the whole file as written.
Status write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {},
                         std::string* sha256_hex = nullptr);
// The bytes of a safetensors file before its data: the 8-byte length and the padded JSON header, and
// the tensors as contiguous host tensors in file order (their bytes follow the header, in this order).
// For writers that write the data themselves (checkpoint shards, through their Env).
struct SafetensorsEncoding {
  std::string header;
  std::vector<Tensor> host;
};
StatusOr<SafetensorsEncoding> encode_safetensors(const std::string& path,
                                                 const std::vector<std::pair<std::string, Tensor>>& tensors,
                                                 const std::map<std::string, std::string>& metadata = {});
// Which tensors to read, given each tensor's name and shape and the file's metadata: the bytes of a
// declined tensor are not read (a reader of part of a checkpoint shard); it is listed in `skipped`.
using TensorFilter = std::function<bool(const std::string& name, const Shape& shape,
                                        const std::map<std::string, std::string>& metadata)>;
// `sha256_hex`, when given, receives the digest of the whole file (the data has no holes, so reading
// every tensor reads every byte; it needs every tensor read: no `wanted`).
StatusOr<SafetensorsContents> read_safetensors(const std::string& path, std::string* sha256_hex = nullptr,
                                               const TensorFilter& wanted = {});

}  // namespace dtrn::train
