#include "placement.h"

#include "dtrn/model/model.h"
#include "dtrn/runtime/optim.h"

namespace dtrn::train {
namespace {

// Runs one tiny DTRNet training step (forward, backward, optimizer) on `device`; returns the error it raised, or ""
// when the device's backend has every kernel the model needs.
std::string training_gap(Device device, DType dtype) {
  try {
    model::ModelConfig c;
    c.d_model = 8;
    c.n_layers = 3;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.d_ff = 8;
    c.vocab_size = 60;
    c.seq_len = 4;
    c.layout = "TDT";
    model::DtrnModel probe(c, model::RoutingConfig{}, device, dtype);
    probe.init(0);
    Tensor ids = Tensor::from_ints({1, 2, 3, 4}, {1, 4}, DType::kI32);
    model::ForwardOptions fo;
    fo.training = true;
    probe.forward(ids, ids, fo).loss.backward();
    std::vector<ParamGroupEntry> groups;
    for (const auto& p : probe.parameters()) groups.push_back({p.name, p.tensor, p.decay, p.compute});
    AdamW(groups, AdamWOptions{}).clip_and_step(1e-3, 1.0).item();
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

}  // namespace

StatusOr<Placement> resolve_placement(const TrainConfig& train, std::string* note, int gpu) {
  // The compute dtype on a device: bf16 on CUDA unless fp32 was asked for; fp32 on the CPU.
  auto dtype_on = [&](Device d) {
    return d.is_cuda() && train.precision != "fp32" ? DType::kBF16 : DType::kF32;
  };
  Device device = Device::cpu();
  if (train.device == "auto") {
    if (cuda_available()) {
      use_device(Device::cuda(gpu));  // before the probe, so that it runs on this process's GPU alone
      const std::string gap = training_gap(Device::cuda(gpu), dtype_on(Device::cuda(gpu)));
      if (gap.empty()) {
        device = Device::cuda(gpu);
      } else {
        *note = "train.device auto: a GPU is present but the CUDA backend cannot train the model (" + gap +
                "); training on the CPU";
      }
    }
  } else {
    try {
      device = Device::parse(train.device);
    } catch (const Error& e) {
      return Status::InvalidArgument(std::string("train.device: ") + e.what());
    }
    if (device.is_cuda() && train.device.find(':') == std::string::npos) device = Device::cuda(gpu);
    if (device.is_cuda()) {
      try {
        use_device(device);
      } catch (const Error& e) {
        return Status::InvalidArgument("train.device " + train.device + ": " + e.what());
      }
      const std::string gap = training_gap(device, dtype_on(device));
      if (!gap.empty()) return Status::InvalidArgument("train.device " + train.device + ": " + gap);
    }
  }
  if (train.precision == "bf16" && device.is_cpu()) {
    return Status::InvalidArgument("train.precision: bf16 compute needs a CUDA device; the CPU trains in fp32");
  }
  return Placement{device, dtype_on(device)};
}

StatusOr<Placement> rank_placement(const TrainConfig& train, const parallel::LaunchEnv& launch, std::string* note) {
  const int gpus = cuda_device_count();
  return resolve_placement(train, note, launch.world_size > 1 && gpus > 0 ? launch.local_rank % gpus : 0);
}

}  // namespace dtrn::train
