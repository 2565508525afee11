#include "backend.h"

#include <cstdlib>
#include <cstring>

#include "cpu/cpu_backend.h"

namespace dtrn {
namespace {

[[noreturn]] void missing(const Backend& b, const char* kernel) {
  DTRN_CHECK(false, "kernel '", kernel, "' is not implemented on the ", b.name(), " backend");
  std::abort();
}

}  // namespace

// Every kernel's default: fail loudly, naming it (see backend.h).
void Backend::fill(const Tensor&, double) { missing(*this, "fill"); }
void Backend::copy(const Tensor&, const Tensor&) { missing(*this, "copy"); }
void Backend::copy_from_host(void*, const void*, size_t) { missing(*this, "copy_from_host"); }
void Backend::copy_to_host(void*, const void*, size_t) { missing(*this, "copy_to_host"); }
void Backend::fill_random(const Tensor&, bool, double, double, uint64_t, uint64_t, uint64_t) {
  missing(*this, "fill_random");
}
void Backend::binary(BinaryOp, const Tensor&, const Tensor&, const Tensor&) { missing(*this, "binary"); }
void Backend::affine(const Tensor&, double, double, const Tensor&) { missing(*this, "affine"); }
void Backend::silu(const Tensor&, const Tensor&) { missing(*this, "silu"); }
void Backend::silu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "silu_backward");
}
void Backend::swiglu(const Tensor&, const Tensor&, const Tensor&) { missing(*this, "swiglu"); }
void Backend::swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&) {
  missing(*this, "swiglu_backward");
}
void Backend::sum_dim(const Tensor&, int64_t, int64_t, int64_t, const Tensor&) {
  missing(*this, "sum_dim");
}
double Backend::sum_squares(const Tensor&) { missing(*this, "sum_squares"); }
void Backend::gemm(const GemmArgs&, const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "gemm");
}
void Backend::gemm_add(const GemmArgs& args, const Tensor& a, const Tensor& b, const Tensor& residual,
                       const Tensor& c) {
  copy(residual, c);
  GemmArgs accumulate = args;
  accumulate.beta = 1.0;
  gemm(accumulate, a, b, c);
}
void Backend::index_select(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) {
  missing(*this, "index_select");
}
void Backend::index_add(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) {
  missing(*this, "index_add");
}
void Backend::rmsnorm(const Tensor&, const Tensor&, double, const Tensor&, const Tensor&) {
  missing(*this, "rmsnorm");
}
void Backend::rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const Tensor&) {
  missing(*this, "rmsnorm_backward");
}
void Backend::add_rmsnorm(const Tensor&, const Tensor&, const Tensor&, double, const Tensor&,
                          const Tensor&, const Tensor&) {
  missing(*this, "add_rmsnorm");
}
void Backend::add_rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "add_rmsnorm_backward");
}
void Backend::rope(const Tensor&, const Tensor&, double, bool, const Tensor&) {
  missing(*this, "rope");
}
void Backend::softmax(const Tensor&, const Tensor&) { missing(*this, "softmax"); }
void Backend::softmax_backward(const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "softmax_backward");
}
void Backend::attention(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                        const Tensor&, const Tensor&) {
  missing(*this, "attention");
}
void Backend::attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const Tensor&) {
  missing(*this, "attention_backward");
}
void Backend::cross_entropy(const Tensor&, const Tensor&, int64_t, int64_t, const Tensor&,
                            const Tensor&) {
  missing(*this, "cross_entropy");
}
void Backend::cross_entropy_backward(const Tensor&, const Tensor&, int64_t, int64_t, const Tensor&,
                                     const Tensor&, double, const Tensor&) {
  missing(*this, "cross_entropy_backward");
}
void Backend::cross_entropy_fused(const Tensor&, const Tensor&, int64_t, int64_t, double,
                                  const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "cross_entropy_fused");
}
void Backend::adamw(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const AdamWArgs&) {
  missing(*this, "adamw");
}

void Backend::sum_squares_multi(const std::vector<Tensor>&, const Tensor&) {
  missing(*this, "sum_squares_multi");
}
void Backend::adamw_multi(const std::vector<AdamWTensors>&, const AdamWArgs&, const Tensor&, double) {
  missing(*this, "adamw_multi");
}
void Backend::add_into(const Tensor&, const Tensor&) { missing(*this, "add_into"); }
void Backend::index_copy(const Tensor&, int64_t, int64_t, int64_t, const Tensor&, const Tensor&) {
  missing(*this, "index_copy");
}
void Backend::combine_paths(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
                            const Tensor&) {
  missing(*this, "combine_paths");
}
void Backend::combine_paths_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                     int64_t, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  missing(*this, "combine_paths_backward");
}
void Backend::route_threshold(const Tensor&, double, const Tensor&) { missing(*this, "route_threshold"); }
void Backend::route_fallback(const Tensor&, int64_t, uint64_t, uint64_t, uint64_t) {
  missing(*this, "route_fallback");
}
void Backend::route_compact(const Tensor&, int64_t, int64_t, const Tensor&, const Tensor&, const Tensor&,
                            const Tensor&, const Tensor&) {
  missing(*this, "route_compact");
}
void Backend::sort_values(const Tensor&, const Tensor&, const Tensor&) { missing(*this, "sort_values"); }

Backend& backend_for(Device device) {
  if (device.is_cpu()) return cpu_backend();
  Backend* cuda = cuda_backend_or_null();
  DTRN_CHECK(cuda != nullptr, "device ", device.str(), " requested but this dtrn was built without CUDA");
  DTRN_CHECK(device.index >= 0 && device.index < cuda_device_count(), "device ", device.str(),
             " does not exist (", cuda_device_count(), " GPU(s) visible)");
  return *cuda;
}

Allocator& allocator_for(Device device) { return backend_for(device).allocator(); }

Allocator& pinned_host_allocator() {
  Backend* cuda = cuda_available() ? cuda_backend_or_null() : nullptr;
  Allocator* pinned = cuda != nullptr ? cuda->pinned_host_allocator() : nullptr;
  return pinned != nullptr ? *pinned : cpu_backend().allocator();
}

#ifndef DTRN_WITH_CUDA
Backend* cuda_backend_or_null() { return nullptr; }
bool cuda_compiled() { return false; }
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
std::string device_name(Device device) {
  DTRN_CHECK(device.is_cpu(), "device ", device.str(), " requested but this dtrn was built without CUDA");
  return "cpu";
}
void synchronize(Device) {}
void use_device(Device device) {
  DTRN_CHECK(device.is_cpu(), "device ", device.str(), " requested but this dtrn was built without CUDA");
}
void* device_stream(Device) { return nullptr; }
DeviceMemoryStats device_memory_stats(Device) { return {}; }
void reset_peak_device_memory(Device) {}
void reserve_device_memory_headroom(Device) {}
#endif

}  // namespace dtrn
