// The figures of one optimizer step: the loss terms and per-layer routing summed over the rank's
// micro-batches where the model runs (read to the host once per step), then reduced over the DP group so
// that every rank holds the global batch's figures. Not thread-safe; one StepSums per step.
#pragma once

#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/parallel/communicator.h"

namespace dtrn::train {

class StepSums {
 public:
  struct Values {
    double loss = 0, ce = 0, sparsity = 0, balance = 0, grad_norm = 0;
  };

  // Adds one micro-batch's terms (each divided by `accum`); layers collects f and fallback on the host
  // and s on the device.
  void add(const model::ForwardResult& r, int64_t accum, std::vector<model::LayerRouting>* layers);
  // Reads every sum and the squared gradient norm in one device-to-host copy; layers' s become
  // host-side scalars.
  Values read(const Tensor& grad_norm_sq, std::vector<model::LayerRouting>* layers);

 private:
  static void accumulate(Tensor* sum, const Tensor& term, double w);

  Tensor loss_, ce_, sparsity_, balance_;
};

// A D layer's routed fraction over the DP ranks.
struct LayerSpread {
  double f_min = 0, f_max = 0;
};

// The step's figures over the DP group: the loss terms and each layer's f and s averaged (each rank's are
// means over its micro-batches of one size, so the average is the global batch's mean), the fallback flag
// or-ed, and each layer's f also as its minimum and maximum over ranks. A collective over `dp`.
std::vector<LayerSpread> reduce_step_over_dp(parallel::Communicator& dp, StepSums::Values* v,
                                             std::vector<model::LayerRouting>* layers);

}  // namespace dtrn::train
