#include "cuda/cuda_context.h"

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/caching_allocator.h"
#include "cuda/cuda_check.h"
#include "dtrn/runtime/check.h"
#include "dtrn/runtime/device.h"

namespace dtrn {
namespace cuda {
namespace {

struct Contexts {
  std::mutex mutex;
  std::vector<std::unique_ptr<DeviceContext>> by_device;
};

Contexts& contexts() {
  static Contexts* all = new Contexts();  // leaked on purpose, see cuda_context.h
  return *all;
}

std::unique_ptr<DeviceContext> create_context(int device) {
  DeviceGuard guard(device);
  auto ctx = std::make_unique<DeviceContext>();
  ctx->device = device;
  CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasLtCreate(&ctx->cublaslt));
  ctx->workspace_bytes = kCublasWorkspaceBytes;
  CUDA_CHECK(cudaMalloc(&ctx->workspace, ctx->workspace_bytes));
  return ctx;
}

}  // namespace

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // no driver or no device: report none and leave no error behind
      n = 0;
    }
    return n;
  }();
  return count;
}

int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

DeviceContext& device_context(int device) {
  DTRN_CHECK(device >= 0 && device < device_count(), "CUDA device ", device, " does not exist (",
             device_count(), " GPU(s) visible)");
  Contexts& all = contexts();
  std::lock_guard<std::mutex> lock(all.mutex);
  if (all.by_device.empty()) all.by_device.resize(device_count());
  auto& slot = all.by_device[device];
  if (!slot) slot = create_context(device);
  return *slot;
}

cudaStream_t stream_for(int device) { return device_context(device).stream; }
cudaStream_t current_stream() { return stream_for(current_device()); }

DeviceGuard::DeviceGuard(int device) {
  CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) {
    CUDA_CHECK(cudaSetDevice(device));
  } else {
    previous_ = -1;  // nothing to restore
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);  // a destructor must not throw; restoring cannot fail here
}

}  // namespace cuda

bool cuda_compiled() { return true; }
int cuda_device_count() { return cuda::device_count(); }
bool cuda_available() { return cuda::device_count() > 0; }

std::string device_name(Device device) {
  if (device.is_cpu()) return "cpu";
  cuda::device_context(device.index);  // checks the index
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device.index));
  return prop.name;
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
  CUDA_CHECK(cudaStreamSynchronize(cuda::device_context(device.index).stream));
}

void use_device(Device device) {
  if (device.is_cpu()) return;
  DTRN_CHECK(device.index >= 0 && device.index < cuda::device_count(), "CUDA device ", device.index,
             " does not exist (", cuda::device_count(), " GPU(s) visible)");
  CUDA_CHECK(cudaSetDevice(device.index));
}

void* device_stream(Device device) {
  if (device.is_cpu()) return nullptr;
  return cuda::device_context(device.index).stream;
}

DeviceMemoryStats device_memory_stats(Device device) {
  if (device.is_cpu()) return {};
  const cuda::AllocatorStats s = cuda::caching_allocator().stats(device.index);
  return {static_cast<int64_t>(s.allocated_bytes), static_cast<int64_t>(s.peak_allocated_bytes),
          static_cast<int64_t>(s.cached_bytes), static_cast<int64_t>(s.device_mallocs),
          static_cast<int64_t>(s.grown_bytes), static_cast<int64_t>(s.largest_growing_request)};
}

void reset_peak_device_memory(Device device) {
  if (device.is_cuda()) cuda::caching_allocator().reset_peak();
}

void reserve_device_memory_headroom(Device device) {
  if (!device.is_cuda()) return;
  constexpr size_t kFloor = size_t{256} << 20;
  const cuda::AllocatorStats s = cuda::caching_allocator().stats(device.index);
  cuda::caching_allocator().reserve_headroom(
      device.index, std::max({kFloor, s.peak_allocated_bytes / 50, s.largest_block}));
}

}  // namespace dtrn
