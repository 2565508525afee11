// TcpMesh: the connections of a TCP world (tcp_communicator.h), one non-blocking socket per peer,
// and the one transfer every TCP collective is built from. Shared by the world communicator and its
// sub-groups. Not thread-safe: the thread that issues collectives is the only caller
// (communicator.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dtrn/parallel/lost_rank.h"
#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {

class TcpMesh {
 public:
  // See make_tcp_world in tcp_communicator.h: the same arguments and the same contract.
  static StatusOr<std::shared_ptr<TcpMesh>> Connect(TcpStore& store, int rank, int world_size,
                                                    const std::string& master_addr,
                                                    std::shared_ptr<Liveness> liveness,
                                                    double timeout_s);
  ~TcpMesh();
  TcpMesh(const TcpMesh&) = delete;
  TcpMesh& operator=(const TcpMesh&) = delete;

  int rank() const { return rank_; }
  // Sends n_send bytes to world rank `to` while receiving n_recv bytes from world rank `from`
  // (either count may be 0; `to` and `from` may be the same peer) and returns when both are done,
  // so that two ranks sending to each other never wait on full socket buffers. A peer whose
  // connection closes ends the process as a lost rank, naming `what`; a long wait consults the
  // Liveness.
  void exchange(int to, const void* send, size_t n_send, int from, void* recv, size_t n_recv,
                const std::string& what);

 private:
  TcpMesh(int rank, int world_size, std::shared_ptr<Liveness> liveness);
  [[noreturn]] void lost(int peer, const std::string& what, double waited_s);

  int rank_;
  std::vector<int> fds_;  // by world rank; -1 for this rank
  std::shared_ptr<Liveness> liveness_;
};

}  // namespace dtrn::parallel
