// Per-device CUDA state: the one stream every dtrn kernel, copy and matmul on that device is queued on,
// the cuBLASLt handle and its workspace. Created on the first use of a device and kept for the life of
// the process (destroying CUDA objects from static destructors races the driver's own teardown at exit).
//
// Note [One stream per device]
// All work on a device runs in issue order on one non-default stream, created with cudaStreamNonBlocking
// so that nothing another library queues on the legacy default stream serialises with it. Because there
// is one stream, memory freed on the host may be handed to the next allocation at once: every kernel that
// could still read the old contents was queued before any kernel that writes the new ones (see
// caching_allocator.h). Work on a second stream (communication, later) must order itself against this one
// with events before it touches dtrn memory.
//
// Thread-safety: all functions are safe to call from several threads; the device a call acts on is the
// calling thread's current CUDA device unless a device index is passed.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>

namespace dtrn::cuda {

// 32 MiB: what cuBLASLt's fastest Hopper kernels ask for at large shapes (split-K and stream-K variants);
// a smaller workspace silently excludes them from the heuristic's choice.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;

struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// Number of usable GPUs, read once; 0 when there is no driver or no device (never throws).
int device_count();
// The calling thread's current CUDA device.
int current_device();
// The context of `device`, created on first use. Throws dtrn::Error for a device that does not exist.
DeviceContext& device_context(int device);
// The stream of the calling thread's current device (see Note [One stream per device]).
cudaStream_t current_stream();
cudaStream_t stream_for(int device);

// Makes `device` current for the guard's lifetime, restoring the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace dtrn::cuda
