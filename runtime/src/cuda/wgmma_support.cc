// wgmma_support.h: DTRN_WGMMA_SM90A is defined by runtime/CMakeLists.txt when it compiles the wgmma
// sources for sm_90a.
#include "cuda/wgmma_support.h"

#include "cuda/cuda_check.h"

namespace dtrn::cuda {

std::string wgmma_unavailable_reason(int device) {
#ifndef DTRN_WGMMA_SM90A
  (void)device;
  return "this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES does not include 90)";
#else
  int major = 0, minor = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major == 9 && minor == 0) return {};
  return "device " + std::to_string(device) + " is sm_" + std::to_string(major) +
         std::to_string(minor) + "; the wgmma kernels are sm_90a code";
#endif
}

}  // namespace dtrn::cuda
