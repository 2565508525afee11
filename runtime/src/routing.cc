#include "dtrn/runtime/routing.h"

#include <algorithm>

#include "backend.h"

namespace dtrn {
namespace {

int64_t read_count(const Tensor& count) {
  int32_t host = 0;
  backend_for(count.device()).copy_to_host(&host, count.raw_data(), sizeof host);
  return host;
}

}  // namespace

TokenRouting route_tokens(const Tensor& p_attn, int64_t rows, int64_t cols, const FallbackDraw& fallback) {
  DTRN_CHECK(p_attn.dim() == 1 && p_attn.numel() == rows * cols && p_attn.dtype() == DType::kF32,
             "route_tokens: p_attn must be f32 [", rows * cols, "], got ", p_attn.describe());
  const Device dev = p_attn.device();
  Backend& be = backend_for(dev);
  const int64_t n = rows * cols;
  Tensor p = p_attn.detach().contiguous();
  Tensor mask = Tensor::empty({n}, DType::kI32, dev);
  Tensor routed = Tensor::empty({n}, DType::kI32, dev), positions = Tensor::empty({n}, DType::kI32, dev);
  Tensor bypass = Tensor::empty({n}, DType::kI32, dev), cu = Tensor::empty({rows + 1}, DType::kI32, dev);
  Tensor count = Tensor::empty({1}, DType::kI32, dev);
  TokenRouting r;
  if (n == 0) {
    be.fill(cu, 0.0);
    r.cu_seqlens = cu;
    r.routed = r.positions = r.bypass = routed;
    return r;
  }
  be.route_threshold(p, 0.5, mask);
  be.route_compact(mask, rows, cols, routed, positions, bypass, cu, count);
  r.count = read_count(count);
  if (r.count == 0 && fallback.enabled) {
    const int64_t want = std::max<int64_t>(1, static_cast<int64_t>(fallback.fraction * n + 0.5));
    be.route_fallback(mask, std::min(want, n), fallback.seed, fallback.stream, fallback.offset);
    be.route_compact(mask, rows, cols, routed, positions, bypass, cu, count);
    r.count = read_count(count);
    r.fallback = true;
  }
  r.routed = routed.narrow(0, 0, r.count);
  r.positions = positions.narrow(0, 0, r.count);
  r.bypass = bypass.narrow(0, 0, n - r.count);
  r.cu_seqlens = cu;
  return r;
}

}  // namespace dtrn
