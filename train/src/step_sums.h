// The figures of one optimizer step: the loss terms and per-layer routing summed over the rank's
// micro-batches where the model runs (read to the host once per step), then reduced over the DP group so
// that every rank holds the global batch's figures. Not thread-safe; one StepSums per step.
#pragma once

#include <vector>

#include "dtrn/model/model.h"
#include "dtrn/parallel/communicator.h"

namespace dtrn::train {

// One D layer over a step's micro-batches: means of f (host), s and Delta's quantiles (device until
// read), the fallback count, and whether the threshold alone routed none or all of some micro-batch.
struct LayerSums {
  int64_t layer = 0;
  double f = 0;
  Tensor s, quantiles;
  int64_t fallbacks = 0;
  bool collapsed = false;
  double s_value = 0;
  std::vector<double> quantile_values;  // Delta at model::measured_quantile_levels
};

class StepSums {
 public:
  struct Values {
    double loss = 0, ce = 0, sparsity = 0, balance = 0, lagrangian = 0, z_loss = 0, grad_norm = 0;
  };

  // Adds one micro-batch's terms (each divided by `accum`); layers collects f and the fallback count on
  // the host, s and the quantiles on the device.
  void add(const model::ForwardResult& r, int64_t accum, std::vector<LayerSums>* layers);
  // Reads every sum and the squared gradient norm in one device-to-host copy; layers' s and quantiles
  // become host-side values.
  Values read(const Tensor& grad_norm_sq, std::vector<LayerSums>* layers);

 private:
  static void accumulate(Tensor* sum, const Tensor& term, double w);

  Tensor loss_, ce_, sparsity_, balance_, lagrangian_, z_loss_;
};

// A D layer's routed fraction over the DP ranks.
struct LayerSpread {
  double f_min = 0, f_max = 0;
};

// The step's figures over the DP group: the loss terms and each layer's f, s and quantiles averaged
// (each rank's are means over its micro-batches of one size, so the average is the global batch's
// mean; for the quantiles, the mean of per-rank quantiles: Note [Routing state across data-parallel
// ranks] in router_control.h), fallbacks summed, collapse or-ed, and each layer's f also as its minimum
// and maximum over ranks. Every rank ends with the same values, so the routing controls' update made
// from them keeps the ranks' threshold biases identical. A collective over `dp`.
std::vector<LayerSpread> reduce_step_over_dp(parallel::Communicator& dp, StepSums::Values* v,
                                             std::vector<LayerSums>* layers);

}  // namespace dtrn::train
