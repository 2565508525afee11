#include "tensor_parallel_import.h"

#include "dtrn/runtime/autograd.h"
#include "dtrn/train/checkpoint.h"

namespace dtrn::train {

std::vector<ParamGroupEntry> param_group_entries(const model::DtrnModel& model) {
  std::vector<ParamGroupEntry> entries;
  for (const auto& p : model.parameters()) {
    entries.push_back({p.name, p.tensor, p.decay, p.compute, p.tp.dim >= 0 && p.tp.size > 1});
  }
  return entries;
}

Status init_from_safetensors_sliced(const std::string& file, uint64_t seed, model::DtrnModel* mine) {
  const DType master = mine->compute_dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  model::DtrnModel whole(mine->config(), mine->routing(), mine->device(), master);
  whole.init(seed);
  DTRN_RETURN_IF_ERROR(init_from_safetensors(file, &whole));
  NoGradGuard no_grad;
  const auto params = mine->parameters(), whole_params = whole.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const model::TensorParallelSlice& split = params[i].tp;
    const Tensor& all = whole_params[i].tensor;
    if (split.dim < 0) {
      params[i].tensor.copy_(all);
      continue;
    }
    const int64_t n = params[i].tensor.size(split.dim);
    params[i].tensor.copy_(all.narrow(split.dim, split.rank * n, n));
  }
  mine->sync_compute_weights();
  mine->set_router_state(whole.router_state());
  return Status::Ok();
}

}  // namespace dtrn::train
