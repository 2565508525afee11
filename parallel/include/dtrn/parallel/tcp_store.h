// TcpStore: the job's small key-value rendezvous over TCP, served by rank 0, as torchrun's TCPStore. It
// shares what the collectives need before they exist (the NCCL unique id) and watches liveness: every
// rank holds one connection for the life of the job, and a connection that closes (a rank that exited,
// normally or not) marks its rank gone (Note [Lost ranks] in lost_rank.h).
//
// Protocol: one text line per request and per reply; values travel hex-encoded, so any bytes fit.
//   HELLO <rank>   -> OK             SET <key> <hex> -> OK         GET <key> -> VAL <hex> (waits until set)
//   LOST -> LOST <lost r>,<r>;<left r>,<r>      BYE -> OK (this rank ends)
//
// Thread-safety: all methods may be called from any thread; requests of one client are serialised.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dtrn/runtime/status.h"

namespace dtrn::parallel {

class TcpStore {
 public:
  // Rank 0 listens on host:port (port 0: a free port, see port()) and serves until destroyed; every rank,
  // rank 0 included, then connects, retrying for up to timeout_s while the server starts.
  static StatusOr<std::unique_ptr<TcpStore>> Open(int rank, int world_size, const std::string& host, int port,
                                                  double timeout_s);
  ~TcpStore();  // says BYE and closes the connection
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value);
  // Waits until some rank has set key (up to the timeout given to Open; then throws dtrn::Error).
  std::string get(const std::string& key);
  // The ranks whose connection closed, ascending: lost (closed without BYE: killed or crashed) and left
  // (said BYE: ended on purpose). Lost = {0} when rank 0 (the server) is gone.
  struct Gone {
    std::vector<int> lost, left;
  };
  Gone gone_ranks();
  int port() const { return port_; }

 private:
  class Server;
  TcpStore() = default;
  std::string request(const std::string& line);

  int rank_ = 0;
  int port_ = 0;
  int fd_ = -1;
  double timeout_s_ = 0;
  std::mutex mu_;
  std::unique_ptr<Server> server_;
};

}  // namespace dtrn::parallel
