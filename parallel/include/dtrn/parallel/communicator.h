// Communicator: the collectives a group of ranks runs together (all-reduce, reduce-scatter, all-gather,
// broadcast, barrier), one interface over Open MPI or TCP (CPU tensors), NCCL (CUDA tensors) and the
// single-process group. Groups are objects passed explicitly (process_groups.h), never a global.
//
// Every collective is issued by every rank of the group in the same order with tensors of the same dtype
// and element count. Tensors are contiguous and stay alive and untouched until the Work completes. The
// *_async calls return at once with a Work; wait() makes later work see the result (on the CPU it blocks
// until then; on a GPU it orders the device's compute stream after the collective without blocking the
// host). The synchronous calls are the async ones followed by wait(). NCCL also takes host tensors (for
// small control messages): they travel through device copies, and the call returns with the result.
//
// Failure: a collective that cannot complete within the communicator's timeout (a rank died or hangs)
// ends the process with one line on stderr naming the group, the collective and the ranks that were lost
// or late, and exit status kExitLostRank (Note [Lost ranks] in lost_rank.h). Never a silent hang.
//
// Thread-safety: one thread issues a communicator's collectives; Work objects are waited on that thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn::parallel {

enum class ReduceOp { kSum, kAvg, kMax, kMin };
const char* reduce_op_name(ReduceOp op);

class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name in messages ("world", "dp", "tp").
  virtual const std::string& name() const = 0;

  // In place: every rank's t becomes op over all ranks' t.
  virtual std::unique_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  // in: size() * n elements, out: n. Rank r's out = op over ranks of piece r of their in.
  virtual std::unique_ptr<Work> reduce_scatter_async(const Tensor& in, const Tensor& out, ReduceOp op) = 0;
  // in: n elements, out: size() * n. Piece r of out = rank r's in.
  virtual std::unique_ptr<Work> all_gather_async(const Tensor& in, const Tensor& out) = 0;
  // In place: every rank's t becomes root's t.
  virtual std::unique_ptr<Work> broadcast_async(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // The sub-group of the ranks that pass the same color, ordered by key; a collective over this group.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  void all_reduce(const Tensor& t, ReduceOp op) { all_reduce_async(t, op)->wait(); }
  void reduce_scatter(const Tensor& in, const Tensor& out, ReduceOp op) {
    reduce_scatter_async(in, out, op)->wait();
  }
  void all_gather(const Tensor& in, const Tensor& out) { all_gather_async(in, out)->wait(); }
  void broadcast(const Tensor& t, int root) { broadcast_async(t, root)->wait(); }
};

// The group of one process: every collective is the identity (avg over one rank is the value itself).
std::unique_ptr<Communicator> make_single_process_communicator(const std::string& name = "world");

// Every rank's *text becomes root's (two broadcasts: the length, then the bytes).
void broadcast_string(Communicator& comm, std::string* text, int root);
// Every rank gets every rank's `mine`, in rank order (two all-gathers: the lengths, then the bytes).
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine);

// Checks the arguments every implementation shares (contiguity, matching dtypes, element counts) and
// throws dtrn::Error naming the collective and the group.
void check_collective(const Communicator& comm, const char* collective, const Tensor& in, const Tensor& out,
                      int64_t out_per_in_numerator, int64_t out_per_in_denominator);

}  // namespace dtrn::parallel
