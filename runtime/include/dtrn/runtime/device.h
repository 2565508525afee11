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

}  // namespace dtrn
