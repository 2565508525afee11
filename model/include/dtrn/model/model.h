// DtrnModel: a decoder-only DTRNet language model assembled from a layout string: token embedding (tied
// with the LM head), the T and D blocks, a final RMSNorm, and the loss CE + lambda S + beta Bal (+ the
// Lagrangian and z-loss terms of the routing controls, routing_loss.h).
//
// The model owns its parameters (leaf Tensors on one device) under Hugging Face Llama names
// (model.layers.3.self_attn.q_proj.weight, ...), plus model.layers.N.router.{0,2}.{weight,bias} for the
// routers. The compute dtype says what the forward runs in: f32 or f64 (the parameters are the weights
// it reads), or bf16 (mixed precision: f32 master weights, which are saved and optimised, and bf16
// copies that the forward reads and whose f32 gradients the optimiser consumes). The routing controls'
// state (router_control.h) lives here too, outside the parameters. Not thread-safe; one
// model per training process, or per TP rank (Note [Tensor-parallel DTRNet]).
//
// Note [Tensor-parallel DTRNet]
// With a TP group of P ranks (tensor_parallel_ops.h) the model runs in Megatron-LM's form. The residual
// stream is replicated; each rank holds a slice of every large weight and the blocks join the slices with
// one all-reduce after attention and one after the MLP (blocks.h):
//   q_proj, k_proj, v_proj   rows (dim 0): H/P query heads, G/P KV heads  (column-parallel)
//   o_proj                   columns (dim 1): the same heads              (row-parallel)
//   gate_proj, up_proj       rows: F/P hidden units                       (column-parallel)
//   down_proj                columns: the same units                      (row-parallel)
//   embed_tokens             rows: V_padded/P of the vocabulary (vocab_parallel.h); tied with the LM
//                            head, so the logits are split by vocabulary and so is the cross-entropy
//   norms, routers           whole on every rank (replicated)
// The router reads the replicated residual, so every TP rank routes the same tokens (rule 3); a forward
// checks that the ranks' routed counts agree. The D block's attention path and bypass split by heads like
// the T block's attention. Gradients of replicated parameters come out equal on every TP rank, because
// each replicated activation's gradient is summed over the group where it enters the split part (copy_to).
// Parameter names and global shapes are the single process's; NamedParameter::tp says which slice a rank
// holds, and init(seed) gives each rank its slice of the single process's weights.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/model/config.h"
#include "dtrn/model/router_control.h"
#include "dtrn/model/routing_loss.h"
#include "dtrn/model/tensor_parallel_ops.h"

namespace dtrn::model {

// How tensor parallelism splits a parameter: TP rank `rank` of `size` holds the rank-th of `size` equal
// slices of the global tensor along `dim`; dim -1 is a replicated parameter (every TP rank holds it all).
// Checkpoints describe each saved slice by the global shape and offsets this gives.
struct TensorParallelSlice {
  int dim = -1;
  int64_t rank = 0;
  int64_t size = 1;
};

struct NamedParameter {
  std::string name;
  Tensor tensor;      // the master weights (f32; f64 models keep f64): what is saved, loaded, optimised
  bool decay = true;  // weight decay applies (not to biases and norm weights)
  Tensor compute;     // what the forward reads and differentiates: `tensor` itself, or its bf16 copy
  TensorParallelSlice tp;  // which slice of the global parameter this process holds
};

struct LayerRouting {
  int64_t layer = 0;
  double f = 0;          // routed fraction (known on the host: it sized the packed products)
  Tensor s;              // mean p_attn, a detached scalar where the model runs (read it when needed)
  bool fallback = false;
  Tensor quantiles;      // f32 [kMeasuredQuantiles] of Delta (blocks.h), detached, where the model runs;
                         // undefined unless training
  int64_t threshold_routed = 0;  // routed by the threshold alone, before any fallback
  int64_t tokens = 0;
};

struct ForwardOptions {
  bool training = false;  // enables the starvation fallback (rule 4)
  uint64_t seed = 0;      // the run's seed
  uint64_t draw = 0;      // a unique number for this micro-batch (step * accumulation + micro index)
  int64_t ignore_index = -100;
  // The gradient backward() will give the loss (the trainer's 1 / accumulation steps): cross-entropy
  // makes its gradient in the forward for this value (cross_entropy in ops.h).
  double loss_grad = 1.0;
};

struct ForwardResult {
  Tensor loss;      // CE + lambda S + beta Bal + Lag + z_loss_weight Z (scalar)
  Tensor ce;        // mean cross-entropy over counted targets (scalar)
  RoutingTerms routing;
  std::vector<LayerRouting> layers;  // one per D layer, in layer order
  int64_t targets_counted = 0;
};

class DtrnModel {
 public:
  // tp: this rank's TP group (not owned; it must outlive the model), or null (or a group of one) for
  // the whole model in this process. The config must split over it (validate_tensor_parallel).
  DtrnModel(const ModelConfig& config, const RoutingConfig& routing, Device device,
            DType compute_dtype = DType::kF32, TensorParallelOps* tp = nullptr);

  // The spec's initialisation: every weight N(0, 0.02), output projections (W_O, down) scaled by
  // 1/sqrt(2 L), router biases 0, norm weights 1. Each parameter draws from its own RNG stream (a hash
  // of its name), so the values do not depend on parameter order.
  void init(uint64_t seed);
  // Rewrites the compute copies from the master weights (after init, a checkpoint load or an import;
  // the optimiser refreshes them itself). A no-op when the compute dtype is the masters'.
  void sync_compute_weights();

  // The benchmark protocol of ../shared/peer/torch_dtrnet.py: every router's output weights are spread
  // (x50, so that its logit difference is O(1) rather than tiny at initialisation) and its bypass bias set
  // to the (1 - fraction) quantile of that difference over the tokens of `ids` reaching the layer, so
  // that about `fraction` of them route to attention; fraction 0 or 1 pins routing off or on. spread
  // false re-sets the biases only (a second calibration of already spread routers).
  void calibrate_routing(const Tensor& ids, double fraction, bool spread = true);
  // The threshold bias's start (router_control.h): walks `ids` through the layers, setting each D
  // layer's b_l to minus Delta's (1 - rho)-quantile over the tokens reaching it, the layer then routing
  // with it. Marks the state initialised.
  void init_router_bias(const Tensor& ids);
  const RouterState& router_state() const { return router_; }
  // Replaces the state (a checkpoint's); its vectors must be empty or one entry per D layer.
  void set_router_state(const RouterState& state);
  int64_t routed_layer_count() const;

  // ids, targets: i32/i64 [B, T] (T <= seq_len). Returns the loss and per-layer routing.
  ForwardResult forward(const Tensor& ids, const Tensor& targets, const ForwardOptions& options);
  // Final hidden states -> logits [B*T, padded_vocab] (for evaluation and export checks; gathered over
  // the TP group).
  Tensor logits(const Tensor& ids);

  const ModelConfig& config() const { return config_; }
  const RoutingConfig& routing() const { return routing_; }
  const std::string& layout() const { return layout_; }
  std::vector<NamedParameter> parameters() const;
  int64_t parameter_count() const;  // held by this rank (its slices under TP)
  TensorParallelOps* tensor_parallel() const { return tp_; }  // null without TP
  Device device() const { return device_; }
  DType compute_dtype() const { return dtype_; }

 private:
  Tensor hidden(const Tensor& ids, const ForwardOptions& options, std::vector<RoutingStats>* stats,
                std::vector<LayerRouting>* layers);
  // Registers a parameter of global shape `shape` (master and compute copy), this rank's slice along
  // tp_dim under TP (-1: replicated), and returns the tensor the forward reads.
  Tensor add_parameter(const std::string& name, const Shape& shape, bool decay, int tp_dim = -1);
  // Token embeddings [B, T, C] of ids (vocabulary-parallel under TP) and the tied LM head's logits of
  // final hidden states [N, C] -> [N, padded_vocab] (this rank's columns under TP).
  Tensor embed(const Tensor& ids);
  Tensor head(const Tensor& h);
  // Under TP: every rank of the group routed the same number of tokens in each D layer.
  void check_routing_agrees(const std::vector<LayerRouting>& layers) const;
  const NamedParameter& parameter(const std::string& name) const;
  const BlockContext& context(int64_t batch, int64_t seq);
  // How D layer number k (0-based among the D layers) routes in a forward.
  RouteControl route_control(size_t k, bool training) const;
  // Runs ids through the layers without gradient; before each D layer (number k among them), `before`
  // may change how it routes (its router weights, or b_l), and the layer then runs with that.
  void walk_layers(const Tensor& ids, const std::function<void(int64_t layer, size_t k, const Tensor& x)>& before);

  ModelConfig config_;
  RoutingConfig routing_;
  std::string layout_;
  Device device_;
  DType dtype_;
  TensorParallelOps* tp_ = nullptr;  // null unless a group of 2 or more
  std::vector<NamedParameter> params_;  // in Hugging Face order
  Tensor embed_;       // [V_padded, C], compute copy
  Tensor final_norm_;  // [C], compute copy
  std::vector<BlockWeights> blocks_;
  std::vector<std::pair<std::pair<int64_t, int64_t>, BlockContext>> contexts_;  // by (B, T)
  RouterState router_;
};

}  // namespace dtrn::model
