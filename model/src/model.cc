#include "dtrn/model/model.h"

#include <algorithm>
#include <cmath>

#include "dtrn/model/vocab_parallel.h"
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

}  // namespace

DtrnModel::DtrnModel(const ModelConfig& config, const RoutingConfig& routing, Device device,
                     DType compute_dtype, TensorParallelOps* tp)
    : config_(config), routing_(routing), device_(device), dtype_(compute_dtype),
      tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr) {
  Status s = validate(config);
  DTRN_CHECK(s.ok(), s.message());
  s = validate_tensor_parallel(config, tp_ ? tp_->size() : 1);
  DTRN_CHECK(s.ok(), s.message());
  DTRN_CHECK(is_floating(compute_dtype), "model: compute dtype must be floating, got ",
             dtype_name(compute_dtype));
  layout_ = resolve_layout(config.layout, config.n_layers).value();
  const int64_t c = config.d_model, hd = config.n_heads * config.head_dim();
  const int64_t kvd = config.n_kv_heads * config.head_dim(), f = config.d_ff;
  embed_ = add_parameter("model.embed_tokens.weight", {config.padded_vocab(), c}, true, 0);
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    BlockWeights b;
    b.norm_in = add_parameter(p + "input_layernorm.weight", {c}, false);
    b.attn = {add_parameter(p + "self_attn.q_proj.weight", {hd, c}, true, 0),
              add_parameter(p + "self_attn.k_proj.weight", {kvd, c}, true, 0),
              add_parameter(p + "self_attn.v_proj.weight", {kvd, c}, true, 0),
              add_parameter(p + "self_attn.o_proj.weight", {c, hd}, true, 1)};
    b.norm_post = add_parameter(p + "post_attention_layernorm.weight", {c}, false);
    b.mlp = {add_parameter(p + "mlp.gate_proj.weight", {f, c}, true, 0),
             add_parameter(p + "mlp.up_proj.weight", {f, c}, true, 0),
             add_parameter(p + "mlp.down_proj.weight", {c, f}, true, 1)};
    if (layout_[l] == 'D') {
      b.router = {add_parameter(p + "router.0.weight", {c / 2, c}, true),
                  add_parameter(p + "router.0.bias", {c / 2}, false),
                  add_parameter(p + "router.2.weight", {2, c / 2}, true),
                  add_parameter(p + "router.2.bias", {2}, false)};
    }
    blocks_.push_back(std::move(b));
  }
  final_norm_ = add_parameter("model.norm.weight", {c}, false);
}

Tensor DtrnModel::add_parameter(const std::string& name, const Shape& global_shape, bool decay, int tp_dim) {
  const DType master = dtype_ == DType::kF64 ? DType::kF64 : DType::kF32;
  Shape shape = global_shape;
  TensorParallelSlice slice;
  if (tp_) {
    slice = {tp_dim, tp_->rank(), tp_->size()};
    if (tp_dim >= 0) shape[tp_dim] /= tp_->size();  // validate_tensor_parallel: divisible
  }
  NamedParameter p{name, Tensor::zeros(shape, master, device_), decay, Tensor(), slice};
  p.compute = dtype_ == master ? p.tensor : Tensor::zeros(shape, dtype_, device_);
  p.compute.set_requires_grad(true);
  params_.push_back(p);
  return p.compute;
}

std::vector<NamedParameter> DtrnModel::parameters() const { return params_; }

void DtrnModel::sync_compute_weights() {
  NoGradGuard no_grad;
  for (const NamedParameter& p : params_) {
    if (!p.compute.same(p.tensor)) p.compute.copy_(p.tensor);
  }
}

const BlockContext& DtrnModel::context(int64_t batch, int64_t seq) {
  for (const auto& [shape, ctx] : contexts_) {
    if (shape.first == batch && shape.second == seq) return ctx;
  }
  // Evaluation and training use a handful of shapes; a bound keeps odd callers from growing it.
  if (contexts_.size() >= 8) contexts_.erase(contexts_.begin());
  contexts_.emplace_back(std::make_pair(batch, seq), make_block_context(config_, batch, seq, device_));
  return contexts_.back().second;
}

int64_t DtrnModel::routed_layer_count() const {
  return static_cast<int64_t>(std::count(layout_.begin(), layout_.end(), 'D'));
}

void DtrnModel::set_router_state(const RouterState& state) {
  const size_t n = static_cast<size_t>(routed_layer_count());
  DTRN_CHECK((state.bias.empty() || state.bias.size() == n) &&
                 (state.multiplier.empty() || state.multiplier.size() == n),
             "model: routing state for ", state.bias.size(), " / ", state.multiplier.size(), " layers, the model has ",
             n, " D layers");
  router_ = state;
}

RouteControl DtrnModel::route_control(size_t k, bool training) const {
  const RoutingConfig& r = routing_;
  RouteControl c;
  c.use_bias = r.bias_enabled() && router_.initialized && k < router_.bias.size();
  c.bias = c.use_bias ? router_.bias[k] : 0.0;
  c.bias_scales_path = r.bias_path == "biased";
  c.band = {training && r.fallback == "band", r.fallback_low, r.fallback_high, r.target_fraction};
  c.measure = training;
  c.target_fraction = r.target_fraction;
  c.soft_tau = r.soft_balance() ? r.balance_tau : 0.0;
  c.z_loss = r.z_loss_weight > 0;
  return c;
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
      // The whole tensor from its stream, then this rank's slice: TP ranks start from the single
      // process's weights.
      Shape shape = p.tensor.shape();
      if (p.tp.dim >= 0) shape[p.tp.dim] *= p.tp.size;
      Tensor full = Tensor::normal(shape, 0.0, is_output ? out_std : kInitStd, seed, fnv1a(n), 0,
                                   p.tensor.dtype(), device_);
      const int64_t d = p.tp.dim, rows = d >= 0 ? p.tensor.size(d) : 0;
      p.tensor.copy_(d >= 0 ? full.narrow(d, p.tp.rank * rows, rows) : full);
    }
  }
  sync_compute_weights();
}

Tensor DtrnModel::hidden(const Tensor& ids, const ForwardOptions& options, std::vector<RoutingStats>* stats,
                         std::vector<LayerRouting>* layers) {
  DTRN_CHECK(ids.dim() == 2, "model: ids must be [B, T], got ", ids.describe());
  DTRN_CHECK(ids.size(1) <= config_.seq_len, "model: sequence of ", ids.size(1),
             " tokens is longer than model.seq_len ", config_.seq_len);
  Tensor x = embed(ids);
  const BlockContext& ctx = context(ids.size(0), ids.size(1));
  size_t k = 0;  // D layers so far
  std::vector<LayerRouting> routed;  // what the TP agreement check reads when the caller keeps nothing
  if (tp_ && !layers) layers = &routed;
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (layout_[l] == 'T') {
      x = dense_block_forward(config_, blocks_[l], x, &ctx, tp_);
      continue;
    }
    FallbackDraw draw;
    draw.enabled = options.training;
    draw.seed = options.seed;
    draw.stream = kFallbackStreamBase + static_cast<uint64_t>(l);
    draw.offset = options.draw << 32;  // 2^32 words per micro-batch and layer: never overlap
    draw.fraction = routing_.fallback_fraction;
    RoutingStats st;
    x = routed_block_forward(config_, blocks_[l], x, draw, &st, route_control(k++, options.training), tp_);
    if (layers) {
      layers->push_back({l, st.f(), st.s.detach(), st.fallback,
                         st.quantiles.defined() ? st.quantiles.detach() : Tensor(), st.threshold_routed, st.tokens});
    }
    if (stats) stats->push_back(std::move(st));
  }
  if (tp_) check_routing_agrees(*layers);
  return rmsnorm(x, final_norm_, config_.norm_eps);
}

Tensor DtrnModel::embed(const Tensor& ids) {
  return tp_ ? vocab_parallel_embedding(embed_, ids, *tp_) : embedding(embed_, ids.to(device_));
}

Tensor DtrnModel::head(const Tensor& h) {
  return matmul(copy_to_tensor_parallel(tp_, h.reshape({-1, config_.d_model})), embed_, false, true);
}

void DtrnModel::check_routing_agrees(const std::vector<LayerRouting>& layers) const {
  if (layers.empty()) return;
  // max over the ranks of (count, -count) is (count, -count) on each rank iff all counts are equal.
  std::vector<double> counts;
  for (const LayerRouting& l : layers) counts.push_back(std::round(l.f * static_cast<double>(l.tokens)));
  for (const LayerRouting& l : layers) counts.push_back(-std::round(l.f * static_cast<double>(l.tokens)));
  Tensor t = Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())}, DType::kF64, device_);
  tp_->all_reduce_max(t);
  const std::vector<double> agreed = t.to_vector();
  for (size_t i = 0; i < layers.size(); ++i) {
    DTRN_CHECK(agreed[i] == counts[i] && agreed[i + layers.size()] == counts[i + layers.size()],
               "tensor parallelism: layer ", layers[i].layer, " routed ", counts[i], " tokens on TP rank ",
               tp_->rank(), ", between ", -agreed[i + layers.size()], " and ", agreed[i],
               " on the group (the router's input is not replicated)");
  }
}

Tensor DtrnModel::logits(const Tensor& ids) {
  Tensor logits = head(hidden(ids, ForwardOptions{}, nullptr, nullptr));
  return tp_ ? tp_->gather_from(logits) : logits;
}

ForwardResult DtrnModel::forward(const Tensor& ids, const Tensor& targets, const ForwardOptions& options) {
  DTRN_CHECK(targets.shape() == ids.shape(), "model: targets ", targets.describe(), " vs ids ",
             ids.describe());
  ForwardResult r;
  std::vector<RoutingStats> stats;
  Tensor h = hidden(ids, options, &stats, &r.layers);
  Tensor logits = head(h);
  // Targets stay where they come from (the host, for the trainer): cross_entropy counts and checks them
  // there, with no device synchronisation.
  Tensor flat_targets = targets.reshape({targets.numel()});
  r.ce = tp_ ? vocab_parallel_cross_entropy(logits, flat_targets, options.ignore_index, config_.vocab_size, *tp_)
             : cross_entropy(logits, flat_targets, options.ignore_index, config_.vocab_size, options.loss_grad);
  if (flat_targets.device().is_cpu()) {
    const Tensor host = flat_targets.contiguous();
    for (int64_t i = 0; i < host.numel(); ++i) {
      const int64_t v = host.dtype() == DType::kI32 ? host.data<int32_t>()[i] : host.data<int64_t>()[i];
      r.targets_counted += v != options.ignore_index;
    }
  } else {
    for (int64_t v : flat_targets.to_ints()) r.targets_counted += v != options.ignore_index;
  }
  const bool lagrangian = routing_.balance_multiplier_lr > 0 && !router_.multiplier.empty();
  r.routing = routing_terms(stats, routing_, lagrangian ? router_.multiplier : std::vector<double>{});
  r.loss = r.ce;
  if (r.routing.sparsity.defined() && routing_.sparsity_weight > 0) {
    r.loss = add(r.loss, scale(r.routing.sparsity.to(r.ce.dtype()), routing_.sparsity_weight));
  }
  if (r.routing.balance.defined() && routing_.balance_weight > 0) {
    r.loss = add(r.loss, scale(r.routing.balance.to(r.ce.dtype()), routing_.balance_weight));
  }
  if (r.routing.lagrangian.defined()) r.loss = add(r.loss, r.routing.lagrangian.to(r.ce.dtype()));
  if (r.routing.z_loss.defined()) {
    r.loss = add(r.loss, scale(r.routing.z_loss.to(r.ce.dtype()), routing_.z_loss_weight));
  }
  return r;
}

}  // namespace dtrn::model
