// allreduce_bench: the bus bandwidth of dtrn's communicator all-reduce (the collective that data
// parallelism's gradient buckets use), nccl-tests style, so a slow collective is visible next to what the
// machine can do. Run it as the ranks of a job:
//   NCCL_NVLS_ENABLE=0 mpirun -np 4 build/bin/allreduce_bench --device cuda     (NCCL, one GPU per rank)
//   mpirun -np 2 build/bin/allreduce_bench                                       (Open MPI, CPU tensors)
// For each size (f32 elements; 1 MiB to --max-mb MiB) it times 20 all-reduces (sum) after 5 warm-ups and
// prints, on rank 0, the mean time, the algorithm bandwidth (bytes / time) and the bus bandwidth
// algbw * 2 (n - 1) / n, which nccl-tests report and which a ring reaches at the link's speed.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dtrn/parallel/process_groups.h"
#include "dtrn/runtime/device.h"

int main(int argc, char** argv) {
  using namespace dtrn;
  std::string device_name = "cpu";
  double max_mb = 256;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--device") == 0) device_name = argv[i + 1];
    else if (std::strcmp(argv[i], "--max-mb") == 0) max_mb = std::atof(argv[i + 1]);
  }
  auto launch = parallel::read_launch_env();
  if (!launch.ok() || launch->world_size < 2) {
    std::fprintf(stderr, "allreduce_bench: run it under mpirun or srun with 2 or more ranks\n");
    return 2;
  }
  parallel::ParallelOptions o;
  o.dp = launch->world_size;
  o.device = device_name == "cpu" ? Device::cpu() : Device::cuda(launch->local_rank % cuda_device_count());
  use_device(o.device);  // before NCCL or anything else touches CUDA
  auto groups = parallel::ProcessGroups::Join(o);
  if (!groups.ok()) {
    std::fprintf(stderr, "allreduce_bench: %s\n", groups.status().message().c_str());
    return 1;
  }
  parallel::Communicator& world = (*groups)->world();
  const int n = world.size();
  if (world.rank() == 0) {
    std::printf("all-reduce (sum, f32) over %d ranks on %s\n%12s %12s %12s %12s\n", n, device_name.c_str(),
                "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
  }
  constexpr int kWarmup = 5, kRuns = 20;
  for (double mb = 1; mb <= max_mb; mb *= 4) {
    const int64_t elements = static_cast<int64_t>(mb * (1 << 20)) / 4;
    Tensor t = Tensor::full({elements}, 1.0, DType::kF32, o.device);
    for (int i = 0; i < kWarmup; ++i) world.all_reduce(t, parallel::ReduceOp::kSum);
    synchronize(o.device);
    world.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kRuns; ++i) world.all_reduce(t, parallel::ReduceOp::kSum);
    synchronize(o.device);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kRuns;
    const double bytes = static_cast<double>(elements) * 4;
    const double algbw = bytes / seconds / 1e9;
    if (world.rank() == 0) {
      std::printf("%12.0f %12.1f %12.2f %12.2f\n", bytes, seconds * 1e6, algbw, algbw * 2.0 * (n - 1) / n);
    }
  }
  return 0;
}
