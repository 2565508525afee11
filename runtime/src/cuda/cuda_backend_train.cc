// CudaBackend's training-step kernels: token routing, gradient accumulation, the row scatter and the
// multi-tensor optimizer (launchers in train_kernels.h).
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <string>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_context.h"
#include "cuda/kernel_args.h"
#include "cuda/train_kernels.h"

namespace dtrn {
namespace {

using cuda::ElemType;

cudaStream_t stream_of(const Tensor& t) {
  DTRN_ASSERT(t.device().is_cuda(), "CUDA kernel given ", t.describe());
  return cuda::stream_for(t.device().index);
}

void check_i32(const Tensor& t, const char* kernel) {
  DTRN_ASSERT(t.dtype() == DType::kI32 && t.is_contiguous() && t.device().is_cuda(), kernel,
              " needs contiguous i32 device tensors, got ", t.describe());
}

// The slot and chunk tables of a multi-tensor launch, uploaded once per distinct set of tensors: a
// training run passes the same parameters and gradient buffers every step, so after the first step
// no table travels again (and no host synchronisation happens).
struct MultiTensorTables {
  const cuda::AdamWSlot* slots = nullptr;
  const cuda::TensorChunk* chunks = nullptr;
  int64_t num_chunks = 0;
  double* partial = nullptr;  // one f64 per chunk (the norm's scratch)
};

class TableCache {
 public:
  MultiTensorTables get(int device, const std::vector<cuda::AdamWSlot>& slots) {
    std::string key(reinterpret_cast<const char*>(slots.data()), slots.size() * sizeof(cuda::AdamWSlot));
    key.append(reinterpret_cast<const char*>(&device), sizeof device);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = tables_.find(key);
    if (it == tables_.end()) {
      if (tables_.size() >= kMaxTables) tables_.clear();
      it = tables_.emplace(key, upload(device, slots)).first;
    }
    const Entry& e = it->second;
    const auto* base = static_cast<const char*>(e.memory.raw_data());
    MultiTensorTables t;
    t.slots = reinterpret_cast<const cuda::AdamWSlot*>(base);
    t.chunks = reinterpret_cast<const cuda::TensorChunk*>(base + e.chunks_offset);
    t.num_chunks = e.num_chunks;
    t.partial = reinterpret_cast<double*>(const_cast<char*>(base) + e.partial_offset);
    return t;
  }

 private:
  static constexpr size_t kMaxTables = 16;
  struct Entry {
    Tensor memory;  // i64 words holding slots, chunks and the partial sums
    size_t chunks_offset = 0, partial_offset = 0;
    int64_t num_chunks = 0;
  };

  static size_t align8(size_t n) { return (n + 7) / 8 * 8; }

  static Entry upload(int device, const std::vector<cuda::AdamWSlot>& slots) {
    std::vector<cuda::TensorChunk> chunks;
    for (size_t s = 0; s < slots.size(); ++s) {
      for (int64_t b = 0; b < slots[s].n; b += cuda::kOptimizerChunk) {
        chunks.push_back({static_cast<int32_t>(s), b, std::min(slots[s].n, b + cuda::kOptimizerChunk)});
      }
    }
    Entry e;
    e.num_chunks = static_cast<int64_t>(chunks.size());
    e.chunks_offset = align8(slots.size() * sizeof(cuda::AdamWSlot));
    e.partial_offset = align8(e.chunks_offset + chunks.size() * sizeof(cuda::TensorChunk));
    const size_t bytes = e.partial_offset + chunks.size() * sizeof(double);
    std::vector<char> host(bytes, 0);
    std::memcpy(host.data(), slots.data(), slots.size() * sizeof(cuda::AdamWSlot));
    std::memcpy(host.data() + e.chunks_offset, chunks.data(), chunks.size() * sizeof(cuda::TensorChunk));
    e.memory = Tensor::empty({static_cast<int64_t>(bytes / 8)}, DType::kI64, Device::cuda(device));
    cuda_backend().copy_from_host(e.memory.raw_data(), host.data(), bytes);
    return e;
  }

  std::mutex mutex_;
  std::map<std::string, Entry> tables_;
};

TableCache& table_cache() {
  static TableCache* cache = new TableCache();  // leaked: see cuda_context.h
  return *cache;
}

float* f32_data(const Tensor& t, const char* what) {
  DTRN_ASSERT(t.dtype() == DType::kF32 && t.is_contiguous() && t.device().is_cuda(), "adamw_multi: ", what,
              " must be a contiguous f32 device tensor, got ", t.describe());
  return static_cast<float*>(t.raw_data());
}

}  // namespace

void CudaBackend::sum_squares_multi(const std::vector<Tensor>& tensors, const Tensor& out) {
  DTRN_ASSERT(out.dtype() == DType::kF64 && out.numel() == 1, "sum_squares_multi: out ", out.describe());
  std::vector<cuda::AdamWSlot> slots;
  for (const Tensor& t : tensors) slots.push_back({nullptr, f32_data(t, "gradient"), nullptr, nullptr, nullptr, t.numel(), 0.0});
  const int device = out.device().index;
  cuda::DeviceGuard guard(device);
  const MultiTensorTables t = table_cache().get(device, slots);
  cuda::launch_sum_squares_multi(t.slots, t.chunks, t.num_chunks, t.partial, static_cast<double*>(out.raw_data()),
                                 stream_of(out));
}

void CudaBackend::adamw_multi(const std::vector<AdamWTensors>& entries, const AdamWArgs& args,
                              const Tensor& norm_sq, double max_norm) {
  DTRN_ASSERT(norm_sq.dtype() == DType::kF64 && norm_sq.numel() == 1, "adamw_multi: norm_sq ", norm_sq.describe());
  std::vector<cuda::AdamWSlot> slots;
  for (const AdamWTensors& e : entries) {
    uint16_t* compute = nullptr;
    if (e.compute.defined()) {
      DTRN_ASSERT(e.compute.dtype() == DType::kBF16 && e.compute.is_contiguous(),
                  "adamw_multi: compute copies are contiguous bf16, got ", e.compute.describe());
      compute = static_cast<uint16_t*>(e.compute.raw_data());
    }
    slots.push_back({f32_data(e.param, "param"), f32_data(e.grad, "grad"), f32_data(e.m, "m"),
                     f32_data(e.v, "v"), compute, e.param.numel(), e.weight_decay});
  }
  const int device = norm_sq.device().index;
  cuda::DeviceGuard guard(device);
  const MultiTensorTables t = table_cache().get(device, slots);
  const cuda::AdamWHyper h{args.lr,  args.beta1, args.beta2, args.eps, args.bias_correction1,
                           args.bias_correction2, max_norm};
  cuda::launch_adamw_multi(t.slots, t.chunks, t.num_chunks, h, static_cast<const double*>(norm_sq.raw_data()),
                           stream_of(norm_sq));
}

void CudaBackend::add_into(const Tensor& dst, const Tensor& src) {
  DTRN_ASSERT(dst.numel() == src.numel() && dst.is_contiguous() && src.is_contiguous(), "add_into: ",
              dst.describe(), " += ", src.describe());
  DTRN_ASSERT(is_floating(dst.dtype()) && is_floating(src.dtype()), "add_into: ", dst.describe(), " += ",
              src.describe());
  cuda::DeviceGuard guard(dst.device().index);
  cuda::launch_add_into(dst.raw_data(), static_cast<ElemType>(dst.dtype()), src.raw_data(),
                        static_cast<ElemType>(src.dtype()), dst.numel(), stream_of(dst));
}

void CudaBackend::index_copy(const Tensor& out, int64_t outer, int64_t n, int64_t inner, const Tensor& index,
                             const Tensor& src) {
  DTRN_ASSERT(out.dtype() == src.dtype() && out.is_contiguous() && src.is_contiguous(), "index_copy: ",
              out.describe(), " <- ", src.describe());
  cuda::DeviceGuard guard(out.device().index);
  cuda::launch_index_copy(out.raw_data(), src.raw_data(), index.raw_data(), index.dtype() == DType::kI64,
                          outer, n, index.numel(), inner, static_cast<int>(dtype_size(out.dtype())),
                          stream_of(out));
}

void CudaBackend::combine_paths(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                                const Tensor& bypass, int64_t heads, const Tensor& y) {
  DTRN_ASSERT(p.dtype() == DType::kF32 && o.dtype() == v.dtype() && y.dtype() == v.dtype(), "combine_paths: p ",
              p.describe(), ", o ", o.describe(), ", v ", v.describe(), ", y ", y.describe());
  check_i32(routed, "combine_paths");
  check_i32(bypass, "combine_paths");
  cuda::DeviceGuard guard(v.device().index);
  cuda::launch_combine_paths(o.raw_data(), v.raw_data(), static_cast<const float*>(p.raw_data()),
                             static_cast<const int32_t*>(routed.raw_data()), static_cast<const int32_t*>(bypass.raw_data()),
                             v.size(0), routed.numel(), heads, y.size(1), v.size(1), static_cast<ElemType>(v.dtype()),
                             y.raw_data(), stream_of(v));
}

void CudaBackend::combine_paths_backward(const Tensor& o, const Tensor& v, const Tensor& p, const Tensor& routed,
                                         const Tensor& bypass, int64_t heads, const Tensor& dy, const Tensor& d_o,
                                         const Tensor& dv, const Tensor& dp) {
  DTRN_ASSERT(p.dtype() == DType::kF32 && dp.dtype() == DType::kF32 && dy.dtype() == v.dtype() &&
                  d_o.dtype() == v.dtype() && dv.dtype() == v.dtype(),
              "combine_paths_backward: p ", p.describe(), ", dy ", dy.describe(), ", v ", v.describe());
  check_i32(routed, "combine_paths_backward");
  check_i32(bypass, "combine_paths_backward");
  cuda::DeviceGuard guard(v.device().index);
  cuda::launch_combine_paths_backward(
      o.raw_data(), v.raw_data(), static_cast<const float*>(p.raw_data()), static_cast<const int32_t*>(routed.raw_data()),
      static_cast<const int32_t*>(bypass.raw_data()), v.size(0), routed.numel(), heads, dy.size(1), v.size(1),
      static_cast<ElemType>(v.dtype()), dy.raw_data(), d_o.raw_data(), dv.raw_data(), static_cast<float*>(dp.raw_data()),
      stream_of(v));
}

void CudaBackend::route_threshold(const Tensor& p, double threshold, const Tensor& mask) {
  DTRN_ASSERT(p.dtype() == DType::kF32 && p.is_contiguous(), "route_threshold: p ", p.describe());
  check_i32(mask, "route_threshold");
  cuda::DeviceGuard guard(p.device().index);
  cuda::launch_route_threshold(static_cast<const float*>(p.raw_data()), p.numel(), static_cast<float>(threshold),
                               static_cast<int32_t*>(mask.raw_data()), stream_of(p));
}

void CudaBackend::route_fallback(const Tensor& mask, int64_t want, uint64_t seed, uint64_t stream,
                                 uint64_t offset) {
  check_i32(mask, "route_fallback");
  cuda::DeviceGuard guard(mask.device().index);
  Tensor order = Tensor::empty({mask.numel()}, DType::kI32, mask.device());
  cuda::launch_route_fallback(static_cast<int32_t*>(mask.raw_data()), static_cast<int32_t*>(order.raw_data()),
                              mask.numel(), want, seed, stream, offset, stream_of(mask));
}

void CudaBackend::route_compact(const Tensor& mask, int64_t rows, int64_t cols, const Tensor& routed,
                                const Tensor& positions, const Tensor& bypass, const Tensor& cu_seqlens,
                                const Tensor& count) {
  for (const Tensor* t : {&mask, &routed, &positions, &bypass, &cu_seqlens, &count}) check_i32(*t, "route_compact");
  cuda::DeviceGuard guard(mask.device().index);
  auto i32 = [](const Tensor& t) { return static_cast<int32_t*>(t.raw_data()); };
  cuda::launch_route_compact(i32(mask), rows, cols, i32(routed), i32(positions), i32(bypass), i32(cu_seqlens),
                             i32(count), stream_of(mask));
}

void CudaBackend::sort_values(const Tensor& keys, const Tensor& sorted, const Tensor& order) {
  DTRN_ASSERT(keys.dtype() == DType::kF32 && sorted.dtype() == DType::kF32 && keys.is_contiguous(),
              "sort_values: keys ", keys.describe(), " -> ", sorted.describe());
  check_i32(order, "sort_values");
  DTRN_CHECK(keys.numel() <= std::numeric_limits<int32_t>::max(), "sort_values: ", keys.numel(),
             " keys is too many for 32-bit indices");
  cuda::DeviceGuard guard(keys.device().index);
  const size_t bytes = cuda::sort_values_scratch_bytes(keys.numel());
  Tensor scratch = cuda::scratch_tensor(bytes, keys.device().index);
  cuda::launch_sort_values(static_cast<const float*>(keys.raw_data()), static_cast<float*>(sorted.raw_data()),
                           static_cast<int32_t*>(order.raw_data()), keys.numel(), scratch.raw_data(), bytes,
                           stream_of(keys));
}

}  // namespace dtrn
