// Where a tensor's memory lives. The CPU always exists; CUDA devices exist where the CUDA backend was built
// and a GPU is present (cuda_available()).
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

namespace dtrn {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
  // Parses "cpu", "cuda" or "cuda:N"; throws dtrn::Error naming the bad text.
  static Device parse(const std::string& text);
};

std::ostream& operator<<(std::ostream& os, const Device& d);

// True when the CUDA backend was built into this binary.
bool cuda_compiled();
// True when the CUDA backend was built and at least one GPU can be used.
bool cuda_available();
int cuda_device_count();

// The device's name ("NVIDIA H200"; "cpu").
std::string device_name(Device device);
// Waits until every piece of work queued on the device has finished (nothing to wait for on the CPU).
void synchronize(Device device);
// The one stream all of the runtime's work on a CUDA device is queued on (a cudaStream_t, opaque here so
// that this header needs no CUDA), for libraries that order their own streams against it with events
// (NCCL). Null for the CPU.
void* device_stream(Device device);

// Makes a CUDA device the calling thread's current one: where CUDA work that names no device goes (a
// library's set-up, a stream or an event made outside the backend). A process that drives one GPU of
// several, as each rank of a job does, calls it before anything else touches CUDA, so that it never
// makes a context on GPU 0 too. No-op for the CPU.
void use_device(Device device);

// Memory the runtime's allocator holds on a device (zeros for the CPU, which uses plain malloc).
struct DeviceMemoryStats {
  int64_t allocated_bytes = 0;       // in tensors now
  int64_t peak_allocated_bytes = 0;  // since start or reset_peak_device_memory
  int64_t cached_bytes = 0;          // freed blocks kept for reuse
  int64_t device_mallocs = 0;        // calls to the driver's allocator so far
  int64_t grown_bytes = 0;           // what those reserved, in all
  int64_t largest_growing_request = 0;  // the largest block whose allocation needed such a call
};
DeviceMemoryStats device_memory_stats(Device device);
void reset_peak_device_memory(Device device);
// Call once the first training step is done: the device's pool then keeps a free reservation of
// max(256 MiB, peak / 50, the largest block so far) in one piece, so that the working set may grow later
// by that much (a D block's routed count varies from step to step), and the largest block find room
// however the rest is cut up, without the pool reserving more from the driver in the middle of a step.
// Best effort: nothing happens when the memory is not there. No-op on the CPU.
void reserve_device_memory_headroom(Device device);

}  // namespace dtrn
