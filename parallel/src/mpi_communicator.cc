#include "dtrn/parallel/mpi_communicator.h"

#ifdef DTRN_HAVE_MPI
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"
#include "dtrn/runtime/ops.h"

namespace dtrn::parallel {
namespace {

MPI_Datatype mpi_type(const Tensor& t, const std::string& what) {
  switch (t.dtype()) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kI32: return MPI_INT32_T;
    case DType::kI64: return MPI_INT64_T;
    default: break;
  }
  DTRN_CHECK(false, what, ": the MPI communicator takes f32, f64, i32 or i64 CPU tensors, got ", t.describe());
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: return MPI_SUM;  // avg divides after the sum
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

// One outstanding MPI request. wait() polls MPI_Test, consulting Liveness between polls.
class MpiWork final : public Work {
 public:
  MpiWork(MPI_Request request, std::string what, std::shared_ptr<Liveness> liveness, int world_rank,
          Tensor scale_after = Tensor(), double factor = 1)
      : request_(request), what_(std::move(what)), liveness_(std::move(liveness)), world_rank_(world_rank),
        scale_after_(std::move(scale_after)), factor_(factor) {}
  ~MpiWork() override {
    if (!done_) wait();  // a request must complete before its buffers go
  }
  void wait() override {
    if (done_) return;
    const auto started = std::chrono::steady_clock::now();
    int flag = 0;
    while (true) {
      if (MPI_Test(&request_, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        exit_lost_rank(world_rank_, what_ + " (MPI reported an error)", {}, 0);
      }
      if (flag) break;
      liveness_->check(what_, started);
      // Spin briefly, then yield: the other ranks share the cores in small jobs.
      if (std::chrono::steady_clock::now() - started > std::chrono::milliseconds(2)) {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
    done_ = true;
    if (scale_after_.defined()) {
      NoGradGuard no_grad;
      scale_after_.copy_(scale(scale_after_, factor_));
    }
  }

 private:
  MPI_Request request_;
  std::string what_;
  std::shared_ptr<Liveness> liveness_;
  int world_rank_;
  Tensor scale_after_;
  double factor_;
  bool done_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name, std::shared_ptr<Liveness> liveness, bool owns)
      : comm_(comm), name_(std::move(name)), liveness_(std::move(liveness)), owns_(owns) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    world_rank_ = world_rank;
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);  // a communicator outliving MPI (a static) has nothing left to free
    if (owns_ && !finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_collective(*this, "all_reduce", t, t, 1, 1);
    check_cpu(t, "all_reduce");
    const std::string what = describe("all_reduce");
    MPI_Request r;
    check(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()), mpi_type(t, what), mpi_op(op),
                         comm_, &r), what);
    return finish(r, what, op, t);
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) override {
    check_collective(*this, "reduce_scatter", in, out, 1, size_);
    check_cpu(in, "reduce_scatter");
    const std::string what = describe("reduce_scatter");
    MPI_Request r;
    check(MPI_Ireduce_scatter_block(in.raw_data(), out.raw_data(), static_cast<int>(out.numel()),
                                    mpi_type(in, what), mpi_op(op), comm_, &r), what);
    return finish(r, what, op, out);
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    check_collective(*this, "all_gather", in, out, size_, 1);
    check_cpu(in, "all_gather");
    const std::string what = describe("all_gather");
    MPI_Request r;
    const MPI_Datatype type = mpi_type(in, what);
    check(MPI_Iallgather(in.raw_data(), static_cast<int>(in.numel()), type, out.raw_data(),
                         static_cast<int>(in.numel()), type, comm_, &r), what);
    return finish(r, what, ReduceOp::kSum, Tensor());
  }
  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check_collective(*this, "broadcast", t, t, 1, 1);
    check_cpu(t, "broadcast");
    const std::string what = describe("broadcast");
    MPI_Request r;
    check(MPI_Ibcast(t.raw_data(), static_cast<int>(t.numel()), mpi_type(t, what), root, comm_, &r), what);
    return finish(r, what, ReduceOp::kSum, Tensor());
  }
  void barrier() override {
    const std::string what = describe("barrier");
    MPI_Request r;
    check(MPI_Ibarrier(comm_, &r), what);
    finish(r, what, ReduceOp::kSum, Tensor())->wait();
  }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    MPI_Comm sub;
    check(MPI_Comm_split(comm_, color, key, &sub), describe("split"));
    return std::make_unique<MpiCommunicator>(sub, name, liveness_, true);
  }

 private:
  // "all_reduce #12 on group dp (2 ranks)": the number matches the same collective on every rank.
  std::string describe(const char* collective) {
    return std::string(collective) + " #" + std::to_string(++sequence_) + " on group " + name_ + " (" +
           std::to_string(size_) + " ranks)";
  }
  void check(int code, const std::string& what) {
    if (code != MPI_SUCCESS) {
      char text[MPI_MAX_ERROR_STRING];
      int len = 0;
      MPI_Error_string(code, text, &len);
      exit_lost_rank(world_rank_, what + " (MPI: " + std::string(text, len) + ")", {}, 0);
    }
  }
  void check_cpu(const Tensor& t, const char* collective) {
    DTRN_CHECK(t.device().is_cpu(), collective, " on group ", name_,
               ": the MPI communicator takes CPU tensors, got ", t.describe(), " (use NCCL for GPU tensors)");
  }
  std::unique_ptr<Work> finish(MPI_Request r, const std::string& what, ReduceOp op, const Tensor& result) {
    if (op == ReduceOp::kAvg && size_ > 1) {
      return std::make_unique<MpiWork>(r, what, liveness_, world_rank_, result, 1.0 / size_);
    }
    return std::make_unique<MpiWork>(r, what, liveness_, world_rank_);
  }

  MPI_Comm comm_;
  std::string name_;
  std::shared_ptr<Liveness> liveness_;
  bool owns_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  uint64_t sequence_ = 0;
};

}  // namespace

bool mpi_compiled() { return true; }

std::unique_ptr<Communicator> make_mpi_world(std::shared_ptr<Liveness> liveness) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Only the thread that issues collectives calls MPI (the data loader's threads never do).
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    std::atexit([] {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
  }
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", std::move(liveness), false);
}

}  // namespace dtrn::parallel

#else  // !DTRN_HAVE_MPI

#include "dtrn/runtime/check.h"

namespace dtrn::parallel {

bool mpi_compiled() { return false; }

std::unique_ptr<Communicator> make_mpi_world(std::shared_ptr<Liveness>) {
  DTRN_CHECK(false, "this dtrn was built without MPI (Debian: libopenmpi-dev openmpi-bin); CPU ranks need it");
  return nullptr;
}

}  // namespace dtrn::parallel

#endif
