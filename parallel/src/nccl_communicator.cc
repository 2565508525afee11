#include "dtrn/parallel/nccl_communicator.h"

#ifdef DTRN_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

#include "dtrn/runtime/check.h"

namespace dtrn::parallel {
namespace {

#define DTRN_NCCL_CHECK(expr)                                                                      \
  do {                                                                                             \
    const ncclResult_t dtrn_nccl_result_ = (expr);                                                 \
    DTRN_CHECK(dtrn_nccl_result_ == ncclSuccess, #expr, ": ", ncclGetErrorString(dtrn_nccl_result_)); \
  } while (0)
#define DTRN_CUDA_CHECK(expr)                                                                   \
  do {                                                                                          \
    const cudaError_t dtrn_cuda_result_ = (expr);                                               \
    DTRN_CHECK(dtrn_cuda_result_ == cudaSuccess, #expr, ": ", cudaGetErrorString(dtrn_cuda_result_)); \
  } while (0)

ncclDataType_t nccl_type(const Tensor& t) {
  switch (t.dtype()) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    default: break;
  }
  DTRN_CHECK(false, "the NCCL communicator takes f32, f64, bf16, i32 or i64 tensors, got ", t.describe());
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// The state a communicator and its watchdog share: the outstanding collectives, oldest first.
struct Pending {
  cudaEvent_t done;
  std::string what;
  std::chrono::steady_clock::time_point started;
};

class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t done, cudaStream_t compute, std::vector<Tensor> keep)
      : done_(done), compute_(compute), keep_(std::move(keep)) {}
  void wait() override {
    if (waited_) return;
    DTRN_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0));
    waited_ = true;
  }
  ~NcclWork() override {
    if (!waited_) wait();
    cudaEventDestroy(done_);  // deferred by CUDA until the wait queued on it is satisfied
  }

 private:
  cudaEvent_t done_;  // owned; the watchdog watches an event of its own
  cudaStream_t compute_;
  std::vector<Tensor> keep_;  // alive until the compute stream is ordered after the collective
  bool waited_ = false;
};

// A collective that finished before its call returned (one staged through device copies).
class DoneWork final : public Work {
 public:
  void wait() override {}
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, Device device, std::string name, std::shared_ptr<Liveness> liveness,
                   int world_rank)
      : comm_(comm), device_(device), name_(std::move(name)), liveness_(std::move(liveness)),
        world_rank_(world_rank) {
    DTRN_CUDA_CHECK(cudaSetDevice(device_.index));
    DTRN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    compute_ = static_cast<cudaStream_t>(device_stream(device_));
    DTRN_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
    DTRN_NCCL_CHECK(ncclCommCount(comm_, &size_));
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclCommunicator() override {
    stop_ = true;
    watchdog_.join();
    cudaStreamSynchronize(stream_);
    for (auto& p : pending_) cudaEventDestroy(p.done);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    if (!t.device().is_cuda()) return staged(t, t, [&](const Tensor& d, const Tensor&) { return all_reduce_async(d, op); });
    check_collective(*this, "all_reduce", t, t, 1, 1);
    return launch("all_reduce", {t}, [&] {
      return ncclAllReduce(t.raw_data(), t.raw_data(), t.numel(), nccl_type(t), nccl_op(op), comm_, stream_);
    });
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    if (!in.device().is_cuda()) {
      return staged(in, out, [&](const Tensor& i, const Tensor& o) { return reduce_scatter_async(i, o, op); });
    }
    check_collective(*this, "reduce_scatter", in, out, 1, size_);
    return launch("reduce_scatter", {in, out}, [&] {
      return ncclReduceScatter(in.raw_data(), out.raw_data(), out.numel(), nccl_type(in), nccl_op(op), comm_,
                               stream_);
    });
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    if (!in.device().is_cuda()) {
      return staged(in, out, [&](const Tensor& i, const Tensor& o) { return all_gather_async(i, o); });
    }
    check_collective(*this, "all_gather", in, out, size_, 1);
    return launch("all_gather", {in, out}, [&] {
      return ncclAllGather(in.raw_data(), out.raw_data(), in.numel(), nccl_type(in), comm_, stream_);
    });
  }
  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    if (!t.device().is_cuda()) return staged(t, t, [&](const Tensor& d, const Tensor&) { return broadcast_async(d, root); });
    check_collective(*this, "broadcast", t, t, 1, 1);
    return launch("broadcast", {t}, [&] {
      return ncclBroadcast(t.raw_data(), t.raw_data(), t.numel(), nccl_type(t), root, comm_, stream_);
    });
  }
  void barrier() override {
    Tensor one = Tensor::zeros({1}, DType::kF32, device_);
    all_reduce(one, ReduceOp::kSum);
    synchronize(device_);
  }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    ncclComm_t sub;
    DTRN_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
    return std::make_unique<NcclCommunicator>(sub, device_, name, liveness_, world_rank_);
  }

 private:
  // NCCL reads device memory only. Host tensors, the small control collectives of the trainer (agree, the
  // checkpoint commit's rounds, the step's figures), travel through device copies: `collective` runs on
  // them (in place when in and out are one tensor) and out is written back before this returns.
  template <typename Collective>
  std::unique_ptr<Work> staged(const Tensor& in, const Tensor& out, Collective collective) {
    DTRN_CHECK(!out.device().is_cuda(), "a collective on group ", name_, " mixes a host and a device tensor");
    Tensor d_in = in.contiguous().to(device_);
    const bool in_place = in.raw_data() == out.raw_data();
    Tensor d_out = in_place ? d_in : Tensor::empty(out.shape(), out.dtype(), device_);
    collective(d_in, d_out)->wait();
    out.copy_(d_out);
    return std::make_unique<DoneWork>();
  }

  template <typename Call>
  std::unique_ptr<Work> launch(const char* collective, std::vector<Tensor> keep, Call call) {
    for (const Tensor& t : keep) {
      DTRN_CHECK(t.device() == device_, collective, " on group ", name_, ": ", t.describe(), " is not on ",
                 device_.str());
    }
    const std::string what = std::string(collective) + " #" + std::to_string(++sequence_) + " on group " +
                             name_ + " (" + std::to_string(size_) + " ranks)";
    cudaEvent_t ready, done, watched;
    DTRN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    DTRN_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    DTRN_CUDA_CHECK(cudaEventCreateWithFlags(&watched, cudaEventDisableTiming));
    DTRN_CUDA_CHECK(cudaEventRecord(ready, compute_));
    DTRN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    DTRN_CUDA_CHECK(cudaEventDestroy(ready));  // destruction is deferred until the wait is satisfied
    const ncclResult_t r = call();
    if (r != ncclSuccess && r != ncclInProgress) {
      exit_lost_rank(world_rank_, what + " (NCCL: " + ncclGetErrorString(r) + ")", {}, 0);
    }
    DTRN_CUDA_CHECK(cudaEventRecord(done, stream_));
    DTRN_CUDA_CHECK(cudaEventRecord(watched, stream_));
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back({watched, what, std::chrono::steady_clock::now()});
    }
    return std::make_unique<NcclWork>(done, compute_, std::move(keep));
  }

  // Note [Lost ranks]: retires finished collectives; a failed or overdue one ends the process.
  void watch() {
    cudaSetDevice(device_.index);
    while (!stop_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      std::lock_guard<std::mutex> lock(mu_);
      if (async != ncclSuccess && async != ncclInProgress) {
        const std::string what = pending_.empty() ? "group " + name_ : pending_.front().what;
        exit_lost_rank(world_rank_, what + " (NCCL: " + ncclGetErrorString(async) + ")", {}, 0);
      }
      while (!pending_.empty() && cudaEventQuery(pending_.front().done) == cudaSuccess) {
        cudaEventDestroy(pending_.front().done);
        pending_.pop_front();
      }
      if (!pending_.empty()) liveness_->check(pending_.front().what, pending_.front().started);
    }
  }

  ncclComm_t comm_;
  Device device_;
  std::string name_;
  std::shared_ptr<Liveness> liveness_;
  int world_rank_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr, compute_ = nullptr;
  uint64_t sequence_ = 0;
  std::mutex mu_;
  std::deque<Pending> pending_;
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
};

}  // namespace

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_world(TcpStore& store, int rank, int world_size, Device device,
                                              std::shared_ptr<Liveness> liveness) {
  DTRN_CHECK(device.is_cuda(), "the NCCL communicator needs a CUDA device, got ", device.str());
  ncclUniqueId id;
  if (rank == 0) {
    DTRN_NCCL_CHECK(ncclGetUniqueId(&id));
    store.set("nccl_unique_id", std::string(id.internal, sizeof id.internal));
  }
  const std::string shared = store.get("nccl_unique_id");
  DTRN_CHECK(shared.size() == sizeof id.internal, "nccl_unique_id from the job store has ", shared.size(),
             " bytes");
  std::copy(shared.begin(), shared.end(), id.internal);
  DTRN_CUDA_CHECK(cudaSetDevice(device.index));
  ncclComm_t comm;
  DTRN_NCCL_CHECK(ncclCommInitRank(&comm, world_size, id, rank));
  return std::make_unique<NcclCommunicator>(comm, device, "world", std::move(liveness), rank);
}

}  // namespace dtrn::parallel

#else  // !DTRN_HAVE_NCCL

#include "dtrn/runtime/check.h"

namespace dtrn::parallel {

bool nccl_compiled() { return false; }

std::unique_ptr<Communicator> make_nccl_world(TcpStore&, int, int, Device device, std::shared_ptr<Liveness>) {
  DTRN_CHECK(false, "device ", device.str(), ": this dtrn was built without NCCL, which GPU ranks need");
  return nullptr;
}

}  // namespace dtrn::parallel

#endif
