// Whether the Hopper wgmma kernels (wgmma.cuh, attention_wgmma_forward.cu, wgmma_check.cu) can run on a
// device: the build compiled them for sm_90a, which CMake does when CMAKE_CUDA_ARCHITECTURES includes 90
// (runtime/CMakeLists.txt), and the device has compute capability 9.0 (sm_90a code runs on no other).
// Elsewhere their kernels are empty and must not be launched; callers take another path.
//
// C++17 and free of dtrn's Tensor, like elementwise.h. Thread-safe.
#pragma once

#include <string>

namespace dtrn::cuda {

// Empty when `device` runs the wgmma kernels, else the reason in one line (for a test's skip message).
std::string wgmma_unavailable_reason(int device);

inline bool wgmma_available(int device) { return wgmma_unavailable_reason(device).empty(); }

}  // namespace dtrn::cuda
