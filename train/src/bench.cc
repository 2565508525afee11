#include "dtrn/train/bench.h"

#include <chrono>
#include <cmath>

#include "dtrn/model/model.h"
#include "dtrn/parallel/process_groups.h"
#include "dtrn/parallel/tensor_parallel.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/device.h"
#include "dtrn/runtime/ops.h"
#include "dtrn/runtime/optim.h"
#include "dtrn/runtime/rng.h"
#include "bench_saves.h"
#include "placement.h"
#include "tensor_parallel_import.h"

namespace dtrn::train {
namespace {

// Learning rate 0: every step does all of AdamW's work (the kernels do not look at the value) but the
// weights stay where they are, so the routed fraction stays where calibration put it. At init a router's
// logit differences are spread over about 1e-4, and even lr 1e-5 moved them by more than that per step:
// a D layer calibrated to 0.1 routed 0.18-0.19 by the timed steps (bench/RESULTS.md, 2026-11-29).
constexpr double kBenchLr = 0;
constexpr uint64_t kTokenStream = 0x42454e4348ull;  // "BENCH"

}  // namespace

double training_flops(const model::ModelConfig& c, const std::string& layout, int64_t batch, int64_t seq,
                      const std::vector<double>& routed_fraction) {
  const double d = static_cast<double>(c.d_model), ff = static_cast<double>(c.d_ff);
  const double hd = static_cast<double>(c.n_heads * c.head_dim());
  const double kvd = static_cast<double>(c.n_kv_heads * c.head_dim());
  const double t = static_cast<double>(seq);
  // Forward FLOPs per token.
  const double qkvo = 2 * (d * hd + 2 * d * kvd + hd * d);
  const double vo = 2 * (d * kvd + hd * d);
  const double mlp = 2 * 3 * d * ff;
  const double router = 2 * (d * (d / 2) + (d / 2) * 2);
  double per_token = 2 * d * static_cast<double>(c.padded_vocab());  // the LM head
  size_t next_d = 0;
  for (char kind : layout) {
    if (kind == 'T') {
      per_token += qkvo + mlp + 2 * t * hd;  // causal attention: half of 2 * (2 * T * hd) per token
      continue;
    }
    DTRN_CHECK(next_d < routed_fraction.size(), "training_flops: ", routed_fraction.size(),
               " routed fractions for a layout with more D layers: ", layout);
    const double r = routed_fraction[next_d++];
    per_token += router + r * qkvo + (1 - r) * vo + mlp + 2 * r * r * t * hd;
  }
  return 3 * per_token * static_cast<double>(batch) * t;
}

double dense_bf16_peak(const std::string& name) {
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989e12;
  return 0;
}

StatusOr<BenchResult> run_bench(const JobConfig& config, const BenchOptions& options) {
  if (options.steps < 1 || options.warmup < 0) {
    return Status::InvalidArgument("bench: --steps must be >= 1 and --warmup >= 0");
  }
  if (options.phase_steps < 0) return Status::InvalidArgument("bench: --phases must be >= 0");
  if (options.routed_fraction > 1) {
    return Status::InvalidArgument("bench: --routed-fraction must be in [0, 1]");
  }
  if (options.checkpoint_every < 0 || options.checkpoint_every > options.steps) {
    return Status::InvalidArgument("bench: --checkpoint-every " + std::to_string(options.checkpoint_every) +
                                   ": must be in [0, --steps] (0: no saves; --steps is " +
                                   std::to_string(options.steps) + ")");
  }
  if (options.checkpoint_every > 0 && config.parallel.tp != 1) {
    return Status::InvalidArgument("bench: --checkpoint-every measures one process's save; parallel.tp is " +
                                   std::to_string(config.parallel.tp));
  }
  if (config.parallel.dp != 1) {
    return Status::InvalidArgument("bench: parallel.dp is " + std::to_string(config.parallel.dp) +
                                   "; bench measures one model replica (parallel.tp may split it)");
  }
  auto launch = parallel::read_launch_env();
  if (!launch.ok()) return launch.status();
  std::string note;
  auto placement = rank_placement(config.train, *launch, &note);
  if (!placement.ok()) return placement.status();
  const Device device = placement->device;
  const int64_t b = config.train.micro_batch, t = config.model.seq_len;
  parallel::ParallelOptions po;
  po.tp = static_cast<int>(config.parallel.tp);
  po.device = device;
  po.timeout_s = config.parallel.timeout_s;
  auto groups = parallel::ProcessGroups::Join(po);
  if (!groups.ok()) return groups.status();
  parallel::Communicator& tp = (*groups)->tp();
  std::unique_ptr<parallel::TensorParallelGroup> tp_group;
  if (tp.size() > 1) tp_group = std::make_unique<parallel::TensorParallelGroup>(tp);

  model::DtrnModel model(config.model, config.routing, device, placement->compute_dtype, tp_group.get());
  model.init(config.train.seed);
  std::vector<int64_t> tokens(b * (t + 1));
  RngStream rng(config.train.seed, kTokenStream);
  for (auto& v : tokens) v = static_cast<int64_t>(rng.next_below(config.model.vocab_size));
  Tensor all = Tensor::from_ints(tokens, {b, t + 1}, DType::kI32);
  Tensor ids = all.narrow(1, 0, t).contiguous(), targets = all.narrow(1, 1, t).contiguous();
  // Calibrated before the warm-up too, so that warm-up runs (and plans the products of) the same shapes.
  if (options.routed_fraction >= 0) model.calibrate_routing(ids, options.routed_fraction);
  AdamW optimizer(param_group_entries(model), AdamWOptions{0.9, 0.999, 1e-8, config.train.weight_decay});
  if (tp_group) optimizer.set_shard_norm_sum([&tp](const Tensor& sq) { tp.all_reduce(sq, parallel::ReduceOp::kSum); });

  std::unique_ptr<BenchSaves> saves;
  if (options.checkpoint_every > 0) {
    auto opened = BenchSaves::Open(config, options);
    if (!opened.ok()) return opened.status();
    saves = std::move(*opened);
  }

  reset_peak_device_memory(device);
  BenchResult res;
  std::vector<double> f_sum;
  int64_t mallocs_before = 0, grown_before = 0;
  std::chrono::steady_clock::time_point start;
  Tensor last_loss;
  // One step: forward, backward, clipped AdamW. With `phases`, the device is synchronised around each
  // phase and the host's and the device's times are added to it (BenchPhases).
  auto run_step = [&](int64_t step, BenchPhases* phases) {
    using Clock = std::chrono::steady_clock;
    auto ms_since = [](Clock::time_point t0) {
      return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    };
    auto phase = [&](double* host_ms, double* done_ms, auto&& work) {
      if (phases == nullptr) return work();
      synchronize(device);
      const auto t0 = Clock::now();
      work();
      *host_ms += ms_since(t0);
      synchronize(device);
      *done_ms += ms_since(t0);
    };
    model::ForwardResult r;
    model::ForwardOptions fo;
    fo.training = true;
    fo.seed = config.train.seed;
    fo.draw = static_cast<uint64_t>(step);
    BenchPhases unused;
    BenchPhases& p = phases ? *phases : unused;
    phase(&p.forward_host_ms, &p.forward_ms, [&] { r = model.forward(ids, targets, fo); });
    phase(&p.backward_host_ms, &p.backward_ms, [&] { r.loss.backward(); });
    phase(&p.optimizer_host_ms, &p.optimizer_ms, [&] {
      optimizer.clip_and_step(kBenchLr, config.train.clip);
      optimizer.zero_grad();
    });
    last_loss = r.loss.detach();
    return r;
  };
  for (int64_t step = 0; step < options.warmup + options.steps; ++step) {
    if (step == 1) reserve_device_memory_headroom(device);  // as the Trainer does after its first step
    if (step == options.warmup) {
      synchronize(device);
      mallocs_before = device_memory_stats(device).device_mallocs;
      grown_before = device_memory_stats(device).grown_bytes;
      start = std::chrono::steady_clock::now();
    }
    const auto step_start = std::chrono::steady_clock::now();
    const int64_t step_mallocs = device_memory_stats(device).device_mallocs;
    model::ForwardResult r = run_step(step, nullptr);
    if (step >= options.warmup) {
      if (device_memory_stats(device).device_mallocs > step_mallocs) {
        res.steady_growth_steps.push_back(step + 1 - options.warmup);
      }
      if (f_sum.empty()) f_sum.assign(r.layers.size(), 0.0);
      for (size_t i = 0; i < r.layers.size(); ++i) f_sum[i] += r.layers[i].f;
    }
    if (saves && step >= options.warmup) {
      synchronize(device);
      DTRN_RETURN_IF_ERROR(saves->step_done(step + 1, step + 1 - options.warmup, step_start, model, optimizer));
    }
  }
  synchronize(device);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (options.phase_steps > 0) {
    BenchPhases p;
    p.steps = options.phase_steps;
    for (int64_t i = 0; i < options.phase_steps; ++i) run_step(options.warmup + options.steps + i, &p);
    for (double* v : {&p.forward_host_ms, &p.forward_ms, &p.backward_host_ms, &p.backward_ms,
                      &p.optimizer_host_ms, &p.optimizer_ms}) {
      *v /= static_cast<double>(p.steps);
    }
    res.phases = p;
  }
  if (saves) {
    auto account = saves->finish();
    if (!account.ok()) return account.status();
    res.checkpoints = std::move(*account);
  }

  std::vector<double> fractions;
  const std::string& layout = model.layout();
  for (size_t l = 0, i = 0; l < layout.size(); ++l) {
    if (layout[l] != 'D') continue;
    fractions.push_back(f_sum[i] / static_cast<double>(options.steps));
    res.routed_fraction.emplace_back(static_cast<int64_t>(l), fractions.back());
    ++i;
  }
  res.device = device_name(device);
  res.precision = placement->precision_name();
  res.layout = layout;
  for (const auto& p : model.parameters()) res.parameters += p.tensor.numel() * (p.tp.dim >= 0 ? p.tp.size : 1);
  res.tp = tp.size();
  res.rank = tp.rank();
  res.batch = b;
  res.seq = t;
  res.step_ms = seconds * 1e3 / static_cast<double>(options.steps);
  res.tokens_per_s = static_cast<double>(b * t) / (res.step_ms / 1e3);
  res.flops_per_step = training_flops(config.model, layout, b, t, fractions);
  res.tflops = res.flops_per_step / static_cast<double>(res.tp) / (res.step_ms / 1e3) / 1e12;
  res.peak_tflops = dense_bf16_peak(res.device) / 1e12;
  res.mfu = res.peak_tflops > 0 ? res.tflops / res.peak_tflops : 0;
  const DeviceMemoryStats mem = device_memory_stats(device);
  Tensor peak = Tensor::full({1}, static_cast<double>(mem.peak_allocated_bytes), DType::kF64, device);
  tp.all_reduce(peak, parallel::ReduceOp::kMax);
  res.peak_memory_gib = peak.item() / static_cast<double>(1 << 30);
  res.steady_device_mallocs = mem.device_mallocs - mallocs_before;
  res.steady_growth_bytes = mem.grown_bytes - grown_before;
  res.largest_growing_request = mem.largest_growing_request;
  res.final_loss = last_loss.item();
  return res;
}

}  // namespace dtrn::train
