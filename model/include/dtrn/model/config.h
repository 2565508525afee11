// Model and routing configuration, and the layout string that says which layers are dense (T) and which
// are DTRNet (D). Validation returns a Status naming the offending key, so a config error is one line.
#pragma once

#include <cstdint>
#include <string>

#include "dtrn/runtime/status.h"

namespace dtrn::model {

struct ModelConfig {
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t d_ff = 0;
  int64_t vocab_size = 50257;
  int64_t seq_len = 0;
  std::string layout = "bilayer";  // a preset name or an explicit T/D string
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;

  int64_t head_dim() const { return d_model / n_heads; }
  // The vocabulary rounded up to a multiple of 64 (50257 -> 50304): the embedding and logits use it,
  // the padded logits are excluded from the loss.
  int64_t padded_vocab() const { return (vocab_size + 63) / 64 * 64; }
};

struct RoutingConfig {
  double sparsity_weight = 8e-4;   // lambda
  double balance_weight = 0.0;     // beta (the trainer's default is set in train/config)
  double target_fraction = 0.1;    // rho
  double starvation_threshold = 0.01;
  int64_t starvation_window = 50;
  double fallback_fraction = 0.15;  // rule 4 of the spec

  // The routing controls (docs/routing-loss.md). These defaults are the spec's baseline (every control
  // off); the trainer's defaults are set in train/ (job_config.h).
  double bias_rate = 0;             // > 0: the threshold bias b_l follows the per-step quantile by this EMA rate
  double bias_gamma = 0;            // > 0: b_l += gamma * sign(rho - f_l) each step (the sign trim)
  std::string bias_path = "biased";  // the p that scales the paths under a bias: "biased" or "unbiased"
  std::string balance_on = "mean_p";  // Bal's statistic: "mean_p" (s_l) or "soft_fraction"
  double balance_tau = 1.0;         // the soft fraction: mean sigmoid((Delta + b_l) / tau)
  double balance_multiplier_lr = 0;  // > 0: the Lagrangian term mu_l (stat_l - rho), mu_l += lr (f_l - rho)
  double z_loss_weight = 0;         // router z-loss: mean over D layers of mean logsumexp(z)^2
  std::string fallback = "zero";    // "zero": rule 4; "band": top rho by Delta when f leaves the band
  double fallback_low = 0.02;
  double fallback_high = 0.3;

  bool bias_enabled() const { return bias_rate > 0 || bias_gamma > 0; }
  bool soft_balance() const { return balance_on == "soft_fraction"; }
};

// Resolves `layout` ("bilayer", "trilayer", "dense" or an explicit string of T and D) for n_layers.
// bilayer: T at 0, 1 and L-1; D at the even indices 2..L-2; T elsewhere.
// trilayer: first and last T; inside, repeating T-D-D-T groups.
StatusOr<std::string> resolve_layout(const std::string& layout, int64_t n_layers);

// Checks shapes for consistency; the message names the key ("model.n_heads: 7 does not divide
// model.d_model 96").
Status validate(const ModelConfig& config);
Status validate(const RoutingConfig& config);
// Whether the model splits over `tp` tensor-parallel ranks (model.h, Note [Tensor-parallel DTRNet]):
// heads, KV heads, d_ff and the padded vocabulary divisible by tp, and a real token in every rank's slice
// of the vocabulary. The message names the key ("parallel.tp: 3 does not divide model.n_heads 8").
Status validate_tensor_parallel(const ModelConfig& config, int64_t tp);

}  // namespace dtrn::model
