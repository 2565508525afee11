#include "dtrn/train/evaluate.h"

#include <algorithm>
#include <cmath>

#include "dtrn/runtime/autograd.h"

namespace dtrn::train {
namespace {

struct Accumulator {
  double nats = 0;
  int64_t predicted = 0;
  std::vector<LayerAverage> layers;

  // Adds one forward over `n` tokens (B x T) whose targets were all counted.
  void add(const model::ForwardResult& r, int64_t n) {
    nats += r.ce.item() * static_cast<double>(r.targets_counted);
    predicted += r.targets_counted;
    if (layers.empty()) {
      for (const auto& l : r.layers) layers.push_back({l.layer, 0, 0, false});
    }
    for (size_t i = 0; i < r.layers.size(); ++i) {
      layers[i].f += r.layers[i].f * static_cast<double>(n);
      layers[i].s += r.layers[i].s.item() * static_cast<double>(n);
      layers[i].fallback = layers[i].fallback || r.layers[i].fallback;
    }
  }
};

void run_windows(model::DtrnModel& model, const std::vector<int32_t>& tokens, int64_t first_window,
                 int64_t count, int64_t t, Accumulator* acc) {
  std::vector<int64_t> ids(count * t), targets(count * t);
  for (int64_t w = 0; w < count; ++w) {
    const int64_t start = (first_window + w) * t;
    for (int64_t j = 0; j < t; ++j) {
      ids[w * t + j] = tokens[start + j];
      targets[w * t + j] = tokens[start + j + 1];
    }
  }
  model::ForwardResult r = model.forward(Tensor::from_ints(ids, {count, t}, DType::kI32),
                                         Tensor::from_ints(targets, {count, t}, DType::kI32),
                                         model::ForwardOptions{});
  acc->add(r, count * t);
}

}  // namespace

EvalResult evaluate_tokens(model::DtrnModel& model, const std::vector<int32_t>& tokens, int64_t batch,
                           int64_t max_batches, double bytes_per_token, const EvalProgress& progress) {
  NoGradGuard no_grad;
  const int64_t t = model.config().seq_len;
  const int64_t n = static_cast<int64_t>(tokens.size());
  Accumulator acc;
  const int64_t full = n > 0 ? (n - 1) / t : 0;  // windows with all T predictions available
  const int64_t tail = n - 1 - full * t;  // predictions left for a last, shorter window
  int64_t total = (full + batch - 1) / batch + (tail > 0 ? 1 : 0);
  if (max_batches > 0) total = std::min(total, max_batches);
  int64_t batches = 0;
  int64_t w = 0;
  for (; w < full && (max_batches <= 0 || batches < max_batches); w += batch) {
    run_windows(model, tokens, w, std::min(batch, full - w), t, &acc);
    ++batches;
    if (progress) progress(batches, total);
  }
  if (w >= full && tail > 0 && (max_batches <= 0 || batches < max_batches)) {
    std::vector<int32_t> rest(tokens.begin() + full * t, tokens.end());
    model::ForwardResult r = model.forward(
        Tensor::from_ints(std::vector<int64_t>(rest.begin(), rest.end() - 1), {1, tail}, DType::kI32),
        Tensor::from_ints(std::vector<int64_t>(rest.begin() + 1, rest.end()), {1, tail}, DType::kI32),
        model::ForwardOptions{});
    acc.add(r, tail);
    ++batches;
    if (progress) progress(batches, total);
  }
  EvalResult out;
  out.tokens = acc.predicted;
  out.loss = acc.predicted > 0 ? acc.nats / static_cast<double>(acc.predicted) : 0.0;
  out.ppl = std::exp(out.loss);
  out.bits_per_byte = bytes_per_token > 0 ? out.loss / std::log(2.0) / bytes_per_token : 0.0;
  for (auto& l : acc.layers) {
    l.f /= static_cast<double>(acc.predicted);
    l.s /= static_cast<double>(acc.predicted);
  }
  out.layers = acc.layers;
  return out;
}

}  // namespace dtrn::train
