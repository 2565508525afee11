#include "dtrn/coordinator/server.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <condition_variable>
#include <thread>

#include "dtrn/runtime/file_io.h"
#include "dashboard.h"
#include "service.h"

namespace dtrn::coordinator {

struct CoordinatorServer::Impl {
  std::unique_ptr<CallGuard> guard;
  std::vector<std::unique_ptr<grpc::Service>> services;
  std::unique_ptr<grpc::Server> grpc_server;
  httplib::Server http;
  std::thread http_thread, ticker;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
};

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

StatusOr<std::pair<std::string, int>> split_host_port(const std::string& address, const std::string& flag) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return Status::InvalidArgument(flag + ": expected HOST:PORT, got '" + address + "'");
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  char* end = nullptr;
  const long port = std::strtol(address.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) return Status::InvalidArgument(flag + ": bad port in '" + address + "'");
  return std::make_pair(host, static_cast<int>(port));
}

StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(const ServerOptions& options) {
  auto listen = split_host_port(options.listen, "--listen");
  if (!listen.ok()) return listen.status();
  if (!is_loopback(listen->first) && options.auth_token.empty()) {
    return Status::InvalidArgument("--listen " + options.listen +
                                   ": listening beyond loopback needs --auth-token-file (anyone could submit jobs)");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  auto coordinator = Coordinator::Open(options.coordinator);
  if (!coordinator.ok()) return coordinator.status();

  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer());
  server->coordinator_ = std::move(*coordinator);
  server->impl_ = std::make_unique<Impl>();
  Impl& impl = *server->impl_;
  impl.guard = std::make_unique<CallGuard>(server->coordinator_.get(), options.auth_token);

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    auto cert = read_file(options.tls_cert_file);
    if (!cert.ok()) return Status::InvalidArgument("--tls-cert: " + cert.status().message());
    auto key = read_file(options.tls_key_file);
    if (!key.ok()) return Status::InvalidArgument("--tls-key: " + key.status().message());
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  impl.services.push_back(make_jobs_service(impl.guard.get()));
  impl.services.push_back(make_agents_service(impl.guard.get()));
  impl.services.push_back(make_workers_service(impl.guard.get()));
  for (auto& s : impl.services) builder.RegisterService(s.get());
  impl.grpc_server = builder.BuildAndStart();
  if (!impl.grpc_server || server->port_ == 0) {
    return Status::IoError("--listen " + options.listen + ": cannot listen (address in use or not local?)");
  }

  if (!options.metrics_listen.empty()) {
    auto metrics = split_host_port(options.metrics_listen, "--metrics-listen");
    if (!metrics.ok()) return metrics.status();
    Coordinator* c = server->coordinator_.get();
    impl.http.Get("/metrics", [c](const httplib::Request&, httplib::Response& res) {
      res.set_content(c->metrics().serialize(), "text/plain; version=0.0.4; charset=utf-8");
    });
    impl.http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(dashboard_html(), "text/html; charset=utf-8");
    });
    impl.http.Get("/api/job", [c](const httplib::Request& req, httplib::Response& res) {
      int64_t since = 0;
      try {
        since = req.has_param("since") ? std::stoll(req.get_param_value("since")) : 0;
      } catch (const std::exception&) {
        res.status = 400;
        return;
      }
      auto h = c->history(req.get_param_value("id"), since);
      if (!h.ok()) {
        res.status = 404;
        res.set_content(h.status().message(), "text/plain");
        return;
      }
      std::string json;
      (void)google::protobuf::util::MessageToJsonString(*h, &json);
      res.set_content(json, "application/json");
    });
    impl.http.Get("/api/jobs", [c](const httplib::Request&, httplib::Response& res) {
      v1::ListJobsResponse list;
      for (auto& job : c->list()) *list.add_jobs() = std::move(job);
      std::string json;
      (void)google::protobuf::util::MessageToJsonString(list, &json);
      res.set_content(json, "application/json");
    });
    server->metrics_port_ = metrics->second == 0 ? impl.http.bind_to_any_port(metrics->first)
                                                 : (impl.http.bind_to_port(metrics->first, metrics->second)
                                                        ? metrics->second
                                                        : -1);
    if (server->metrics_port_ <= 0) {
      return Status::IoError("--metrics-listen " + options.metrics_listen + ": cannot listen");
    }
    impl.http_thread = std::thread([&impl] { impl.http.listen_after_bind(); });
  }

  impl.ticker = std::thread([&impl, c = server->coordinator_.get(), tick = options.tick_s] {
    std::unique_lock<std::mutex> lock(impl.mu);
    while (!impl.cv.wait_for(lock, std::chrono::duration<double>(tick), [&] { return impl.stopping; })) {
      lock.unlock();
      c->tick();
      lock.lock();
    }
  });
  return server;
}

void CoordinatorServer::wait() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopping; });
}

void CoordinatorServer::shutdown() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  // Streams (WatchJob) notice the deadline and end; unary calls finish.
  impl_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->http.stop();
}

CoordinatorServer::~CoordinatorServer() {
  if (!impl_) return;
  shutdown();
  if (impl_->ticker.joinable()) impl_->ticker.join();
  if (impl_->http_thread.joinable()) impl_->http_thread.join();
}

}  // namespace dtrn::coordinator
