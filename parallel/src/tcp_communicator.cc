#include "dtrn/parallel/tcp_communicator.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/check.h"
#include "dtrn/runtime/ops.h"
#include "tcp_mesh.h"

namespace dtrn::parallel {
namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
};

template <typename T>
void reduce_into(T* acc, const T* x, int64_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:  // avg divides after the sum, as the MPI communicator does
      for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
      break;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], x[i]);
      break;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], x[i]);
      break;
  }
}

void reduce_bytes(DType dtype, void* acc, const void* x, int64_t n, ReduceOp op) {
  switch (dtype) {
    case DType::kF32:
      return reduce_into(static_cast<float*>(acc), static_cast<const float*>(x), n, op);
    case DType::kF64:
      return reduce_into(static_cast<double*>(acc), static_cast<const double*>(x), n, op);
    case DType::kI32:
      return reduce_into(static_cast<int32_t*>(acc), static_cast<const int32_t*>(x), n, op);
    case DType::kI64:
      return reduce_into(static_cast<int64_t*>(acc), static_cast<const int64_t*>(x), n, op);
    default:
      DTRN_CHECK(false, "TCP communicator: no reduction for this dtype");
  }
}

// Chunk c of a buffer split over n ranks: elements [offsets[c], offsets[c + 1]).
std::vector<int64_t> even_chunks(int64_t numel, int n) {
  std::vector<int64_t> offsets(static_cast<size_t>(n) + 1);
  for (int c = 0; c <= n; ++c) offsets[c] = numel * c / n;
  return offsets;
}

class TcpCommunicator final : public Communicator {
 public:
  // `members`: the world ranks of this group, in group-rank order; this process is members[rank].
  TcpCommunicator(std::shared_ptr<TcpMesh> mesh, std::vector<int> members, int rank,
                  std::string name)
      : mesh_(std::move(mesh)), members_(std::move(members)), rank_(rank), name_(std::move(name)) {}

  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(members_.size()); }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check(t, t, "all_reduce", 1, 1);
    const std::string what = describe("all_reduce");
    const std::vector<int64_t> chunks = even_chunks(t.numel(), size());
    ring_reduce_scatter(t.raw_data(), t.dtype(), chunks, op, what);
    ring_all_gather(t.raw_data(), dtype_size(t.dtype()), chunks, what);
    return finish(t, op);
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out,
                                             ReduceOp op) override {
    check(in, out, "reduce_scatter", 1, size());
    const std::string what = describe("reduce_scatter");
    // The input stays as it is: the partial sums travel in a copy.
    std::vector<char> work(in.nbytes());
    std::memcpy(work.data(), in.raw_data(), work.size());
    const std::vector<int64_t> chunks = even_chunks(in.numel(), size());
    ring_reduce_scatter(work.data(), in.dtype(), chunks, op, what);
    const size_t item = dtype_size(in.dtype());
    std::memcpy(out.raw_data(), work.data() + chunks[rank_] * item, out.nbytes());
    return finish(out, op);
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    check(in, out, "all_gather", size(), 1);
    const std::string what = describe("all_gather");
    const std::vector<int64_t> chunks = even_chunks(out.numel(), size());
    const size_t item = dtype_size(in.dtype());
    std::memmove(static_cast<char*>(out.raw_data()) + chunks[rank_] * item, in.raw_data(),
                 in.nbytes());
    ring_all_gather(out.raw_data(), item, chunks, what);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check(t, t, "broadcast", 1, 1);
    DTRN_CHECK(root >= 0 && root < size(), "broadcast on group ", name_, ": root ", root, " of ",
               size(), " ranks");
    const std::string what = describe("broadcast");
    if (rank_ == root) {
      for (int r = 0; r < size(); ++r) {
        if (r != root) mesh_->exchange(members_[r], t.raw_data(), t.nbytes(), -1, nullptr, 0, what);
      }
    } else {
      mesh_->exchange(-1, nullptr, 0, members_[root], t.raw_data(), t.nbytes(), what);
    }
    return std::make_unique<DoneWork>();
  }
  void barrier() override {
    // No rank completes an all-reduce before every rank has contributed to it.
    Tensor token = Tensor::zeros({1}, DType::kI32);
    all_reduce(token, ReduceOp::kSum);
  }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    Tensor mine = Tensor::from_ints({color, key}, {2}, DType::kI64);
    Tensor all = Tensor::zeros({2 * static_cast<int64_t>(size())}, DType::kI64);
    all_gather(mine, all);
    const std::vector<int64_t> v = all.to_ints();
    std::vector<std::pair<int64_t, int>> same;  // (key, group rank): MPI_Comm_split's order
    for (int r = 0; r < size(); ++r) {
      if (v[2 * r] == color) same.emplace_back(v[2 * r + 1], r);
    }
    std::sort(same.begin(), same.end());
    std::vector<int> members;
    int rank = 0;
    for (const auto& [k, r] : same) {
      if (r == rank_) rank = static_cast<int>(members.size());
      members.push_back(members_[r]);
    }
    return std::make_unique<TcpCommunicator>(mesh_, std::move(members), rank, name);
  }

 private:
  void check(const Tensor& in, const Tensor& out, const char* collective, int64_t num,
             int64_t den) {
    check_collective(*this, collective, in, out, num, den);
    DTRN_CHECK(in.device().is_cpu(), collective, " on group ", name_,
               ": the TCP communicator takes CPU tensors, got ", in.describe(),
               " (use NCCL for GPU tensors)");
    const DType d = in.dtype();
    DTRN_CHECK(d == DType::kF32 || d == DType::kF64 || d == DType::kI32 || d == DType::kI64,
               collective, " on group ", name_,
               ": the TCP communicator takes f32, f64, i32 or i64 tensors, got ", in.describe());
  }
  // "all_reduce #12 on group dp (2 ranks)": the number matches the same collective on every rank.
  std::string describe(const char* collective) {
    return std::string(collective) + " #" + std::to_string(++sequence_) + " on group " + name_ +
           " (" + std::to_string(size()) + " ranks)";
  }
  int next() const { return members_[(rank_ + 1) % size()]; }
  int prev() const { return members_[(rank_ + size() - 1) % size()]; }

  // After n - 1 steps chunk r of `data` on rank r holds op over every rank's chunk r. At step s
  // rank r passes on the partial chunk r - s - 1 it received at the step before (its own at step
  // 0).
  void ring_reduce_scatter(void* data, DType dtype, const std::vector<int64_t>& chunks, ReduceOp op,
                           const std::string& what) {
    const int n = size();
    const size_t item = dtype_size(dtype);
    char* base = static_cast<char*>(data);
    int64_t largest = 0;
    for (int c = 0; c < n; ++c) largest = std::max(largest, chunks[c + 1] - chunks[c]);
    std::vector<char> incoming(static_cast<size_t>(largest) * item);
    for (int s = 0; s < n - 1; ++s) {
      const int send_c = ((rank_ - s - 1) % n + n) % n, recv_c = ((rank_ - s - 2) % n + n) % n;
      const int64_t recv_n = chunks[recv_c + 1] - chunks[recv_c];
      mesh_->exchange(next(), base + chunks[send_c] * item,
                      (chunks[send_c + 1] - chunks[send_c]) * item, prev(), incoming.data(),
                      recv_n * item, what);
      reduce_bytes(dtype, base + chunks[recv_c] * item, incoming.data(), recv_n, op);
    }
  }
  // Rank r holds chunk r; after n - 1 steps every rank holds every chunk.
  void ring_all_gather(void* data, size_t item, const std::vector<int64_t>& chunks,
                       const std::string& what) {
    const int n = size();
    char* base = static_cast<char*>(data);
    for (int s = 0; s < n - 1; ++s) {
      const int send_c = ((rank_ - s) % n + n) % n, recv_c = ((rank_ - s - 1) % n + n) % n;
      mesh_->exchange(
          next(), base + chunks[send_c] * item, (chunks[send_c + 1] - chunks[send_c]) * item,
          prev(), base + chunks[recv_c] * item, (chunks[recv_c + 1] - chunks[recv_c]) * item, what);
    }
  }
  std::unique_ptr<Work> finish(const Tensor& result, ReduceOp op) {
    if (op == ReduceOp::kAvg && size() > 1) {
      NoGradGuard no_grad;
      result.copy_(scale(result, 1.0 / size()));
    }
    return std::make_unique<DoneWork>();
  }

  std::shared_ptr<TcpMesh> mesh_;
  std::vector<int> members_;
  int rank_;
  std::string name_;
  uint64_t sequence_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> make_tcp_world(TcpStore& store, int rank, int world_size,
                                                       const std::string& master_addr,
                                                       std::shared_ptr<Liveness> liveness,
                                                       double timeout_s) {
  auto mesh =
      TcpMesh::Connect(store, rank, world_size, master_addr, std::move(liveness), timeout_s);
  if (!mesh.ok()) return mesh.status();
  std::vector<int> members(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) members[r] = r;
  return std::unique_ptr<Communicator>(
      std::make_unique<TcpCommunicator>(*mesh, std::move(members), rank, "world"));
}

}  // namespace dtrn::parallel
