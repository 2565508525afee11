#include "dtrn/runtime/routing.h"

#include <algorithm>
#include <cmath>

#include "backend.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {
namespace {

int64_t read_count(const Tensor& count) {
  int32_t host = 0;
  backend_for(count.device()).copy_to_host(&host, count.raw_data(), sizeof host);
  return host;
}

int64_t round_fraction(double fraction, int64_t n) {
  return std::min(n, std::max<int64_t>(1, static_cast<int64_t>(fraction * static_cast<double>(n) + 0.5)));
}

// mask = 1 at the `want` tokens of highest score (the last of the stable ascending order), 0 elsewhere.
void mark_top(const Tensor& score, int64_t want, const Tensor& mask) {
  Backend& be = backend_for(score.device());
  const auto [sorted, order] = sort_values(score);
  be.fill(mask, 0.0);
  const int64_t n = score.numel();
  Tensor ones = Tensor::full({want}, 1.0, DType::kI32, score.device());
  be.index_copy(mask, 1, n, 1, order.narrow(0, n - want, want).contiguous(), ones);
}

}  // namespace

std::pair<Tensor, Tensor> sort_values(const Tensor& values) {
  DTRN_CHECK(values.dim() == 1 && values.dtype() == DType::kF32, "sort_values: values must be f32 [N], got ",
             values.describe());
  Tensor keys = values.detach().contiguous();
  Tensor sorted = Tensor::empty({keys.numel()}, DType::kF32, keys.device());
  Tensor order = Tensor::empty({keys.numel()}, DType::kI32, keys.device());
  if (keys.numel() > 0) backend_for(keys.device()).sort_values(keys, sorted, order);
  return {sorted, order};
}

std::pair<int64_t, int64_t> quantile_ranks(int64_t n, double q) {
  DTRN_CHECK(n >= 1 && q >= 0 && q <= 1, "quantile_ranks: n ", n, ", q ", q);
  const int64_t lo = static_cast<int64_t>(std::floor(q * static_cast<double>(n - 1)));
  return {lo, std::min(lo + 1, n - 1)};
}

Tensor sorted_quantiles(const Tensor& sorted, const std::vector<double>& qs) {
  DTRN_CHECK(sorted.dim() == 1 && sorted.numel() >= 1, "sorted_quantiles: sorted must be [N >= 1], got ",
             sorted.describe());
  std::vector<Tensor> parts;
  for (double q : qs) {
    const auto [lo, hi] = quantile_ranks(sorted.numel(), q);
    parts.push_back(scale(add(sorted.narrow(0, lo, 1), sorted.narrow(0, hi, 1)), 0.5));
  }
  return concat(parts, 0);
}

TokenRouting route_tokens(const Tensor& score, double threshold, int64_t rows, int64_t cols,
                          const FallbackDraw& fallback, const BandFallback& band) {
  DTRN_CHECK(score.dim() == 1 && score.numel() == rows * cols && score.dtype() == DType::kF32,
             "route_tokens: score must be f32 [", rows * cols, "], got ", score.describe());
  const Device dev = score.device();
  Backend& be = backend_for(dev);
  const int64_t n = rows * cols;
  Tensor p = score.detach().contiguous();
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
  be.route_threshold(p, threshold, mask);
  be.route_compact(mask, rows, cols, routed, positions, bypass, cu, count);
  r.count = r.threshold_count = read_count(count);
  const double f = static_cast<double>(r.count) / static_cast<double>(n);
  if (band.enabled && (f < band.low || f > band.high)) {
    mark_top(p, round_fraction(band.fraction, n), mask);
    r.fallback = true;
  } else if (r.count == 0 && fallback.enabled) {
    be.route_fallback(mask, round_fraction(fallback.fraction, n), fallback.seed, fallback.stream, fallback.offset);
    r.fallback = true;
  }
  if (r.fallback) {
    be.route_compact(mask, rows, cols, routed, positions, bypass, cu, count);
    r.count = read_count(count);
  }
  r.routed = routed.narrow(0, 0, r.count);
  r.positions = positions.narrow(0, 0, r.count);
  r.bypass = bypass.narrow(0, 0, n - r.count);
  r.cu_seqlens = cu;
  return r;
}

}  // namespace dtrn
