// How dtrn's clients (agent, worker, submit, top) reach a coordinator: a channel to ADDR, plaintext or
// TLS, and the bearer token added to every call. Stateless helpers; thread-safe.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "dtrn/runtime/status.h"

namespace dtrn::coordinator {

struct ClientOptions {
  std::string address;      // host:port
  std::string auth_token;   // empty: none
  std::string tls_ca_file;  // empty: plaintext; else TLS, trusting this PEM (the coordinator's cert or CA)
};

StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const ClientOptions& options);
// Adds "authorization: Bearer <token>" (when there is one) and a deadline `timeout_s` from now (when > 0).
void prepare_context(grpc::ClientContext* context, const ClientOptions& options, double timeout_s);
// The first line of a file, without trailing whitespace: how tokens are passed (never on a command line,
// where `ps` shows them).
StatusOr<std::string> read_token_file(const std::string& path);
// "UNAVAILABLE: failed to connect ..." as one line.
std::string describe(const grpc::Status& status);

}  // namespace dtrn::coordinator
