// The coordinator process: the gRPC services (Jobs, Agents, Workers of dtrn/v1/coordinator.proto) over a
// Coordinator, the HTTP endpoint for Prometheus (/metrics) and the live dashboard (/, /api/...), and
// the ticker that drives failure detection and scheduling.
//
// Security: every RPC must carry the bearer token when one is set (UNAUTHENTICATED otherwise, counted in
// dtrn_rpc_rejected_total{reason="unauthenticated"}); messages over max_message_bytes are refused by gRPC
// (RESOURCE_EXHAUSTED); TLS when a certificate and key are given; a non-loopback address needs a token.
// Threads: gRPC's pool, one HTTP thread pool, one ticker; shutdown() (or the destructor) joins them.
#pragma once

#include <memory>
#include <string>

#include "dtrn/coordinator/coordinator.h"

namespace dtrn::coordinator {

struct ServerOptions {
  CoordinatorOptions coordinator;
  std::string listen = "127.0.0.1:50051";         // port 0: any free port (tests)
  std::string metrics_listen = "127.0.0.1:9464";  // empty: no HTTP endpoint; port 0: any free port
  std::string auth_token;                         // empty: no token (loopback only)
  std::string tls_cert_file, tls_key_file;
  int max_message_bytes = 4 << 20;
  double tick_s = 0.2;
};

// True for 127.0.0.0/8, ::1 and localhost.
bool is_loopback(const std::string& host);
// Splits "host:port" ("[::1]:80" too); InvalidArgument naming `flag` otherwise.
StatusOr<std::pair<std::string, int>> split_host_port(const std::string& address, const std::string& flag);

class CoordinatorServer {
 public:
  static StatusOr<std::unique_ptr<CoordinatorServer>> Start(const ServerOptions& options);
  ~CoordinatorServer();
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  Coordinator& coordinator() { return *coordinator_; }
  void wait();      // until shutdown()
  void shutdown();  // idempotent; safe from a signal-watching thread

 private:
  struct Impl;
  CoordinatorServer() = default;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Impl> impl_;
  int port_ = 0, metrics_port_ = 0;
};

}  // namespace dtrn::coordinator
