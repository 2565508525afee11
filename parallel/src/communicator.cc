#include "dtrn/parallel/communicator.h"

#include <algorithm>

#include "dtrn/runtime/check.h"

namespace dtrn::parallel {
namespace {

class DoneWork final : public Work {
 public:
  void wait() override {}
};

class SingleProcessCommunicator final : public Communicator {
 public:
  explicit SingleProcessCommunicator(std::string name) : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp) override {
    check_collective(*this, "all_reduce", t, t, 1, 1);
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp) override {
    check_collective(*this, "reduce_scatter", in, out, 1, 1);
    if (!in.same(out)) out.copy_(in.reshape(out.shape()));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) override {
    check_collective(*this, "all_gather", in, out, 1, 1);
    if (!in.same(out)) out.copy_(in.reshape(out.shape()));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    DTRN_CHECK(root == 0, "broadcast on group ", name_, ": root ", root, " of 1 rank");
    return std::make_unique<DoneWork>();
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int, const std::string& name) override {
    return std::make_unique<SingleProcessCommunicator>(name);
  }

 private:
  std::string name_;
};

}  // namespace

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

std::unique_ptr<Communicator> make_single_process_communicator(const std::string& name) {
  return std::make_unique<SingleProcessCommunicator>(name);
}

void broadcast_string(Communicator& comm, std::string* text, int root) {
  Tensor length = Tensor::from_ints({static_cast<int64_t>(text->size())}, {1}, DType::kI64);
  comm.broadcast(length, root);
  const int64_t n = length.to_ints()[0];
  Tensor bytes = Tensor::zeros({n}, DType::kI32);
  int32_t* p = bytes.data<int32_t>();
  if (comm.rank() == root) {
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>((*text)[i]);
  }
  comm.broadcast(bytes, root);
  text->assign(static_cast<size_t>(n), '\0');
  for (int64_t i = 0; i < n; ++i) (*text)[i] = static_cast<char>(p[i]);
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine) {
  const int64_t n = comm.size();
  Tensor length = Tensor::from_ints({static_cast<int64_t>(mine.size())}, {1}, DType::kI64);
  Tensor lengths = Tensor::empty({n}, DType::kI64);
  comm.all_gather(length, lengths);
  const std::vector<int64_t> sizes = lengths.to_ints();
  const int64_t longest = std::max<int64_t>(1, *std::max_element(sizes.begin(), sizes.end()));
  Tensor bytes = Tensor::zeros({longest}, DType::kI32);
  for (size_t i = 0; i < mine.size(); ++i) bytes.data<int32_t>()[i] = static_cast<unsigned char>(mine[i]);
  Tensor all = Tensor::empty({n * longest}, DType::kI32);
  comm.all_gather(bytes, all);
  std::vector<std::string> out;
  const int32_t* p = all.data<int32_t>();
  for (int64_t r = 0; r < n; ++r) {
    std::string s(static_cast<size_t>(sizes[r]), '\0');
    for (int64_t i = 0; i < sizes[r]; ++i) s[i] = static_cast<char>(p[r * longest + i]);
    out.push_back(std::move(s));
  }
  return out;
}

void check_collective(const Communicator& comm, const char* collective, const Tensor& in, const Tensor& out,
                      int64_t out_per_in_numerator, int64_t out_per_in_denominator) {
  DTRN_CHECK(in.defined() && out.defined(), collective, " on group ", comm.name(), ": undefined tensor");
  DTRN_CHECK(in.is_contiguous() && out.is_contiguous(), collective, " on group ", comm.name(),
             ": tensors must be contiguous, got ", in.describe(), " and ", out.describe());
  DTRN_CHECK(in.dtype() == out.dtype() && in.device() == out.device(), collective, " on group ", comm.name(),
             ": ", in.describe(), " and ", out.describe(), " differ in dtype or device");
  DTRN_CHECK(in.numel() * out_per_in_numerator == out.numel() * out_per_in_denominator, collective,
             " on group ", comm.name(), " of ", comm.size(), " ranks: ", in.describe(), " -> ", out.describe(),
             " has the wrong element count");
}

}  // namespace dtrn::parallel
