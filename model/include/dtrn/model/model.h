// DtrnModel: a decoder-only DTRNet language model assembled from a layout string: token embedding (tied
// with the LM head), the T and D blocks, a final RMSNorm, and the loss CE + lambda S + beta Bal.
//
// The model owns its parameters (leaf Tensors on one device, in one dtype) under Hugging Face Llama names
// (model.layers.3.self_attn.q_proj.weight, ...), plus model.layers.N.router.{0,2}.{weight,bias} for the
// routers. Not thread-safe; one model per training process (or per tensor-parallel shard later).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/model/config.h"
#include "dtrn/model/routing_loss.h"

namespace dtrn::model {

struct NamedParameter {
  std::string name;
  Tensor tensor;
  bool decay = true;  // weight decay applies (not to biases and norm weights)
};

struct LayerRouting {
  int64_t layer = 0;
  double f = 0;  // routed fraction
  double s = 0;  // mean p_attn
  bool fallback = false;
};

struct ForwardOptions {
  bool training = false;  // enables the starvation fallback (rule 4)
  uint64_t seed = 0;      // the run's seed
  uint64_t draw = 0;      // a unique number for this micro-batch (step * accumulation + micro index)
  int64_t ignore_index = -100;
};

struct ForwardResult {
  Tensor loss;      // CE + lambda S + beta Bal (scalar)
  Tensor ce;        // mean cross-entropy over counted targets (scalar)
  RoutingTerms routing;
  std::vector<LayerRouting> layers;  // one per D layer, in layer order
  int64_t targets_counted = 0;
};

class DtrnModel {
 public:
  DtrnModel(const ModelConfig& config, const RoutingConfig& routing, Device device,
            DType dtype = DType::kF32);

  // The spec's initialisation: every weight N(0, 0.02), output projections (W_O, down) scaled by
  // 1/sqrt(2 L), router biases 0, norm weights 1. Each parameter draws from its own RNG stream (a hash
  // of its name), so the values do not depend on parameter order.
  void init(uint64_t seed);

  // ids, targets: i32/i64 [B, T] (T <= seq_len). Returns the loss and per-layer routing.
  ForwardResult forward(const Tensor& ids, const Tensor& targets, const ForwardOptions& options);
  // Final hidden states -> logits [B*T, padded_vocab] (for evaluation and export checks).
  Tensor logits(const Tensor& ids);

  const ModelConfig& config() const { return config_; }
  const RoutingConfig& routing() const { return routing_; }
  const std::string& layout() const { return layout_; }
  std::vector<NamedParameter> parameters() const;
  int64_t parameter_count() const;
  Device device() const { return device_; }

 private:
  Tensor hidden(const Tensor& ids, const ForwardOptions& options, std::vector<RoutingStats>* stats,
                std::vector<LayerRouting>* layers);

  ModelConfig config_;
  RoutingConfig routing_;
  std::string layout_;
  Device device_;
  DType dtype_;
  Tensor embed_;       // [V_padded, C]
  Tensor final_norm_;  // [C]
  std::vector<BlockWeights> blocks_;
};

}  // namespace dtrn::model
