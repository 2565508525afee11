#include "dtrn/model/config.h"

namespace dtrn::model {

StatusOr<std::string> resolve_layout(const std::string& layout, int64_t n_layers) {
  if (n_layers <= 0) return Status::InvalidArgument("model.n_layers must be positive");
  std::string out(static_cast<size_t>(n_layers), 'T');
  if (layout == "dense") return out;
  if (layout == "bilayer") {
    for (int64_t i = 2; i <= n_layers - 2; i += 2) out[i] = 'D';
    return out;
  }
  if (layout == "trilayer") {
    // Inside the first and last layer, groups T D D T repeat: inner index j gets D when j % 4 is 1 or 2.
    for (int64_t i = 1; i < n_layers - 1; ++i) {
      const int64_t j = (i - 1) % 4;
      if (j == 1 || j == 2) out[i] = 'D';
    }
    return out;
  }
  if (static_cast<int64_t>(layout.size()) != n_layers) {
    return Status::InvalidArgument("model.layout: '" + layout + "' is not bilayer, trilayer or dense, and as an explicit layout it has " +
                                   std::to_string(layout.size()) + " letters for " +
                                   std::to_string(n_layers) + " layers");
  }
  for (char c : layout) {
    if (c != 'T' && c != 'D') {
      return Status::InvalidArgument("model.layout: '" + layout + "' may hold only the letters T and D");
    }
  }
  return layout;
}

Status validate(const ModelConfig& c) {
  auto positive = [](const char* key, int64_t v) {
    return v > 0 ? Status::Ok()
                 : Status::InvalidArgument(std::string(key) + " must be positive, got " + std::to_string(v));
  };
  DTRN_RETURN_IF_ERROR(positive("model.d_model", c.d_model));
  DTRN_RETURN_IF_ERROR(positive("model.n_layers", c.n_layers));
  DTRN_RETURN_IF_ERROR(positive("model.n_heads", c.n_heads));
  DTRN_RETURN_IF_ERROR(positive("model.n_kv_heads", c.n_kv_heads));
  DTRN_RETURN_IF_ERROR(positive("model.d_ff", c.d_ff));
  DTRN_RETURN_IF_ERROR(positive("model.vocab_size", c.vocab_size));
  DTRN_RETURN_IF_ERROR(positive("model.seq_len", c.seq_len));
  if (c.d_model % c.n_heads != 0) {
    return Status::InvalidArgument("model.n_heads: " + std::to_string(c.n_heads) + " does not divide model.d_model " +
                                   std::to_string(c.d_model));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return Status::InvalidArgument("model.n_kv_heads: " + std::to_string(c.n_kv_heads) +
                                   " does not divide model.n_heads " + std::to_string(c.n_heads));
  }
  if (c.head_dim() % 2 != 0) {
    return Status::InvalidArgument("model.n_heads: head dimension d_model / n_heads = " +
                                   std::to_string(c.head_dim()) + " must be even for RoPE");
  }
  if (!(c.norm_eps > 0)) return Status::InvalidArgument("model.norm_eps must be positive");
  if (!(c.rope_theta > 0)) return Status::InvalidArgument("model.rope_theta must be positive");
  auto layout = resolve_layout(c.layout, c.n_layers);
  return layout.ok() ? Status::Ok() : layout.status();
}

Status validate(const RoutingConfig& r) {
  if (!(r.sparsity_weight >= 0)) return Status::InvalidArgument("routing.sparsity_weight must be >= 0");
  if (!(r.balance_weight >= 0)) return Status::InvalidArgument("routing.balance_weight must be >= 0");
  if (!(r.target_fraction > 0 && r.target_fraction <= 1)) {
    return Status::InvalidArgument("routing.target_fraction must be in (0, 1]");
  }
  if (!(r.starvation_threshold >= 0 && r.starvation_threshold < 1)) {
    return Status::InvalidArgument("routing.starvation_threshold must be in [0, 1)");
  }
  if (r.starvation_window <= 0) return Status::InvalidArgument("routing.starvation_window must be positive");
  if (!(r.bias_rate >= 0 && r.bias_rate <= 1)) return Status::InvalidArgument("routing.bias_rate must be in [0, 1]");
  if (!(r.bias_gamma >= 0)) return Status::InvalidArgument("routing.bias_gamma must be >= 0");
  if (r.bias_path != "biased" && r.bias_path != "unbiased") {
    return Status::InvalidArgument("routing.bias_path: '" + r.bias_path + "' is not biased or unbiased");
  }
  if (r.balance_on != "mean_p" && r.balance_on != "soft_fraction") {
    return Status::InvalidArgument("routing.balance_on: '" + r.balance_on + "' is not mean_p or soft_fraction");
  }
  if (!(r.balance_tau > 0)) return Status::InvalidArgument("routing.balance_tau must be positive");
  if (!(r.balance_multiplier_lr >= 0)) return Status::InvalidArgument("routing.balance_multiplier_lr must be >= 0");
  if (!(r.z_loss_weight >= 0)) return Status::InvalidArgument("routing.z_loss_weight must be >= 0");
  if (r.fallback != "zero" && r.fallback != "band") {
    return Status::InvalidArgument("routing.fallback: '" + r.fallback + "' is not zero or band");
  }
  if (!(r.fallback_low >= 0 && r.fallback_low < r.fallback_high && r.fallback_high <= 1)) {
    return Status::InvalidArgument("routing.fallback_low/fallback_high must satisfy 0 <= low < high <= 1");
  }
  return Status::Ok();
}

Status validate_tensor_parallel(const ModelConfig& c, int64_t tp) {
  if (tp < 1) return Status::InvalidArgument("parallel.tp: " + std::to_string(tp) + " must be at least 1");
  const std::string p = "parallel.tp: " + std::to_string(tp) + " does not divide ";
  if (c.n_heads % tp != 0) return Status::InvalidArgument(p + "model.n_heads " + std::to_string(c.n_heads));
  if (c.n_kv_heads % tp != 0) return Status::InvalidArgument(p + "model.n_kv_heads " + std::to_string(c.n_kv_heads));
  if (c.d_ff % tp != 0) return Status::InvalidArgument(p + "model.d_ff " + std::to_string(c.d_ff));
  const int64_t v = c.padded_vocab();
  if (v % tp != 0) return Status::InvalidArgument(p + "the padded vocabulary " + std::to_string(v));
  if (c.vocab_size <= (tp - 1) * (v / tp)) {
    return Status::InvalidArgument("parallel.tp: " + std::to_string(tp) + " leaves the last rank's slice of the " +
                                   "vocabulary (" + std::to_string(v / tp) + " rows) with padding only");
  }
  return Status::Ok();
}

}  // namespace dtrn::model
