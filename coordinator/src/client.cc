#include "dtrn/coordinator/client.h"

#include <chrono>

#include "dtrn/runtime/file_io.h"

namespace dtrn::coordinator {

StatusOr<std::shared_ptr<grpc::Channel>> make_channel(const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_file.empty()) {
    auto ca = read_file(options.tls_ca_file);
    if (!ca.ok()) return Status::InvalidArgument("--tls-ca: " + ca.status().message());
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ca;
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(4 << 20);
  // Reconnect quickly after a coordinator restart, instead of gRPC's default back-off of up to 2 minutes.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  return grpc::CreateCustomChannel(options.address, credentials, args);
}

void prepare_context(grpc::ClientContext* context, const ClientOptions& options, double timeout_s) {
  if (!options.auth_token.empty()) context->AddMetadata("authorization", "Bearer " + options.auth_token);
  if (timeout_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3)));
  }
}

StatusOr<std::string> read_token_file(const std::string& path) {
  auto text = read_file(path);
  if (!text.ok()) return text.status();
  std::string token = text->substr(0, text->find('\n'));
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) return Status::InvalidArgument(path + ": empty token file");
  return token;
}

std::string describe(const grpc::Status& status) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int code = status.error_code();
  return std::string(code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN") + ": " + status.error_message();
}

}  // namespace dtrn::coordinator
