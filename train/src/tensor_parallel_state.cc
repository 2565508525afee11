#include "tensor_parallel_state.h"

#include "dtrn/runtime/autograd.h"

namespace dtrn::train {
namespace {

// The part of a whole tensor that TP rank `rank` holds of a parameter split as `tp`.
Tensor slice_of(const Tensor& whole, const model::TensorParallelSlice& tp, int64_t rank) {
  if (tp.dim < 0) return whole;
  const int64_t n = whole.size(tp.dim) / tp.size;
  return whole.narrow(tp.dim, rank * n, n);
}

// Every rank's `mine` (its slice, split as `tp`) into `whole` where it is non-null.
void gather_into(const Tensor& mine, const model::TensorParallelSlice& tp,
                 parallel::Communicator& group, const Tensor* whole) {
  if (tp.dim < 0) {
    if (whole) whole->copy_(mine);  // replicated: equal on every rank
    return;
  }
  const int64_t size = group.size(), n = mine.numel();
  Tensor all = Tensor::empty({size * n}, mine.dtype(), mine.device());
  group.all_gather(mine.contiguous().reshape({n}), all);
  if (!whole) return;
  for (int64_t r = 0; r < size; ++r)
    slice_of(*whole, tp, r).copy_(all.narrow(0, r * n, n).reshape(mine.shape()));
}

}  // namespace

std::vector<ParamGroupEntry> param_group_entries(const model::DtrnModel& model) {
  std::vector<ParamGroupEntry> entries;
  for (const auto& p : model.parameters()) {
    entries.push_back({p.name, p.tensor, p.decay, p.compute, p.tp.dim >= 0 && p.tp.size > 1});
  }
  return entries;
}

WholeState make_whole_state(const model::DtrnModel& mine, const AdamWOptions& options) {
  WholeState w;
  const DType master = mine.compute_dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  w.model =
      std::make_unique<model::DtrnModel>(mine.config(), mine.routing(), mine.device(), master);
  w.optimizer = std::make_unique<AdamW>(param_group_entries(*w.model), options);
  return w;
}

void gather_tensor_parallel(const model::DtrnModel& mine, AdamW& mine_optimizer,
                            parallel::Communicator& tp, WholeState* whole) {
  NoGradGuard no_grad;
  const auto params = mine.parameters();
  const auto whole_params =
      whole ? whole->model->parameters() : std::vector<model::NamedParameter>();
  for (size_t i = 0; i < params.size(); ++i) {
    const model::TensorParallelSlice& split = params[i].tp;
    gather_into(params[i].tensor, split, tp, whole ? &whole_params[i].tensor : nullptr);
    gather_into(mine_optimizer.exp_avg()[i], split, tp,
                whole ? &whole->optimizer->exp_avg()[i] : nullptr);
    gather_into(mine_optimizer.exp_avg_sq()[i], split, tp,
                whole ? &whole->optimizer->exp_avg_sq()[i] : nullptr);
  }
  if (!whole) return;
  whole->model->sync_compute_weights();
  whole->model->set_router_state(mine.router_state());
  whole->optimizer->set_step_count(mine_optimizer.step_count());
}

void take_tensor_parallel_slices(WholeState& whole, model::DtrnModel* mine, AdamW* mine_optimizer) {
  NoGradGuard no_grad;
  const auto params = mine->parameters(), whole_params = whole.model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const model::TensorParallelSlice& split = params[i].tp;
    params[i].tensor.copy_(slice_of(whole_params[i].tensor, split, split.rank));
    if (!mine_optimizer) continue;
    mine_optimizer->exp_avg()[i].copy_(slice_of(whole.optimizer->exp_avg()[i], split, split.rank));
    mine_optimizer->exp_avg_sq()[i].copy_(
        slice_of(whole.optimizer->exp_avg_sq()[i], split, split.rank));
  }
  if (mine_optimizer) mine_optimizer->set_step_count(whole.optimizer->step_count());
  mine->sync_compute_weights();
  mine->set_router_state(whole.model->router_state());
}

}  // namespace dtrn::train
