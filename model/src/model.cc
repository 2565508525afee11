#include "dtrn/model/model.h"

#include <cmath>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::model {
namespace {

constexpr double kInitStd = 0.02;
constexpr uint64_t kFallbackStreamBase = 0x46414c4c00000000ull;  // "FALL": one stream per layer

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

Tensor param(const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::zeros(shape, dtype, device);
  t.set_requires_grad(true);
  return t;
}

}  // namespace

DtrnModel::DtrnModel(const ModelConfig& config, const RoutingConfig& routing, Device device, DType dtype)
    : config_(config), routing_(routing), device_(device), dtype_(dtype) {
  Status s = validate(config);
  DTRN_CHECK(s.ok(), s.message());
  layout_ = resolve_layout(config.layout, config.n_layers).value();
  const int64_t c = config.d_model, hd = config.n_heads * config.head_dim();
  const int64_t kvd = config.n_kv_heads * config.head_dim(), f = config.d_ff;
  embed_ = param({config.padded_vocab(), c}, dtype, device);
  final_norm_ = param({c}, dtype, device);
  for (int64_t l = 0; l < config.n_layers; ++l) {
    BlockWeights b;
    b.norm_in = param({c}, dtype, device);
    b.norm_post = param({c}, dtype, device);
    b.attn = {param({hd, c}, dtype, device), param({kvd, c}, dtype, device),
              param({kvd, c}, dtype, device), param({c, hd}, dtype, device)};
    b.mlp = {param({f, c}, dtype, device), param({f, c}, dtype, device), param({c, f}, dtype, device)};
    if (layout_[l] == 'D') {
      b.router = {param({c / 2, c}, dtype, device), param({c / 2}, dtype, device),
                  param({2, c / 2}, dtype, device), param({2}, dtype, device)};
    }
    blocks_.push_back(std::move(b));
  }
}

std::vector<NamedParameter> DtrnModel::parameters() const {
  std::vector<NamedParameter> out;
  out.push_back({"model.embed_tokens.weight", embed_, true});
  for (size_t l = 0; l < blocks_.size(); ++l) {
    const BlockWeights& b = blocks_[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", b.norm_in, false});
    out.push_back({p + "self_attn.q_proj.weight", b.attn.wq, true});
    out.push_back({p + "self_attn.k_proj.weight", b.attn.wk, true});
    out.push_back({p + "self_attn.v_proj.weight", b.attn.wv, true});
    out.push_back({p + "self_attn.o_proj.weight", b.attn.wo, true});
    out.push_back({p + "post_attention_layernorm.weight", b.norm_post, false});
    out.push_back({p + "mlp.gate_proj.weight", b.mlp.gate, true});
    out.push_back({p + "mlp.up_proj.weight", b.mlp.up, true});
    out.push_back({p + "mlp.down_proj.weight", b.mlp.down, true});
    if (b.router.w1.defined()) {
      out.push_back({p + "router.0.weight", b.router.w1, true});
      out.push_back({p + "router.0.bias", b.router.b1, false});
      out.push_back({p + "router.2.weight", b.router.w2, true});
      out.push_back({p + "router.2.bias", b.router.b2, false});
    }
  }
  out.push_back({"model.norm.weight", final_norm_, false});
  return out;
}

int64_t DtrnModel::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.tensor.numel();
  return n;
}

void DtrnModel::init(uint64_t seed) {
  NoGradGuard no_grad;
  const double out_std = kInitStd / std::sqrt(2.0 * static_cast<double>(config_.n_layers));
  for (const NamedParameter& p : parameters()) {
    const std::string& n = p.name;
    const bool is_norm = n.find("layernorm") != std::string::npos || n == "model.norm.weight";
    const bool is_bias = n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0;
    if (is_norm) {
      p.tensor.fill_(1.0);
    } else if (is_bias) {
      p.tensor.fill_(0.0);
    } else {
      const bool is_output = n.find("o_proj") != std::string::npos || n.find("down_proj") != std::string::npos;
      p.tensor.copy_(Tensor::normal(p.tensor.shape(), 0.0, is_output ? out_std : kInitStd, seed, fnv1a(n),
                                    0, dtype_, device_));
    }
  }
}

Tensor DtrnModel::hidden(const Tensor& ids, const ForwardOptions& options, std::vector<RoutingStats>* stats,
                         std::vector<LayerRouting>* layers) {
  DTRN_CHECK(ids.dim() == 2, "model: ids must be [B, T], got ", ids.describe());
  DTRN_CHECK(ids.size(1) <= config_.seq_len, "model: sequence of ", ids.size(1),
             " tokens is longer than model.seq_len ", config_.seq_len);
  Tensor x = embedding(embed_, ids.to(device_));
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (layout_[l] == 'T') {
      x = dense_block_forward(config_, blocks_[l], x);
      continue;
    }
    FallbackDraw draw;
    draw.enabled = options.training;
    draw.seed = options.seed;
    draw.stream = kFallbackStreamBase + static_cast<uint64_t>(l);
    draw.offset = options.draw << 32;  // 2^32 words per micro-batch and layer: never overlap
    draw.fraction = routing_.fallback_fraction;
    RoutingStats st;
    x = routed_block_forward(config_, blocks_[l], x, draw, &st);
    if (layers) layers->push_back({l, st.f(), st.s.item(), st.fallback});
    if (stats) stats->push_back(std::move(st));
  }
  return rmsnorm(x, final_norm_, config_.norm_eps);
}

Tensor DtrnModel::logits(const Tensor& ids) {
  Tensor h = hidden(ids, ForwardOptions{}, nullptr, nullptr);
  return matmul(h.reshape({-1, config_.d_model}), embed_, false, true);
}

ForwardResult DtrnModel::forward(const Tensor& ids, const Tensor& targets, const ForwardOptions& options) {
  DTRN_CHECK(targets.shape() == ids.shape(), "model: targets ", targets.describe(), " vs ids ",
             ids.describe());
  ForwardResult r;
  std::vector<RoutingStats> stats;
  Tensor h = hidden(ids, options, &stats, &r.layers);
  Tensor logits = matmul(h.reshape({-1, config_.d_model}), embed_, false, true);
  Tensor flat_targets = targets.reshape({targets.numel()}).to(device_);
  r.ce = cross_entropy(logits, flat_targets, options.ignore_index, config_.vocab_size);
  std::vector<int64_t> t = flat_targets.to_ints();
  for (int64_t v : t) r.targets_counted += v != options.ignore_index;
  r.routing = routing_terms(stats, routing_.target_fraction);
  r.loss = r.ce;
  if (r.routing.sparsity.defined() && routing_.sparsity_weight > 0) {
    r.loss = add(r.loss, scale(r.routing.sparsity.to(r.ce.dtype()), routing_.sparsity_weight));
  }
  if (r.routing.balance.defined() && routing_.balance_weight > 0) {
    r.loss = add(r.loss, scale(r.routing.balance.to(r.ce.dtype()), routing_.balance_weight));
  }
  return r;
}

}  // namespace dtrn::model
