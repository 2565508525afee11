// The coordinator's defences, each against a real coordinator running a real job: a missing or wrong
// token, a forged worker identity, a 100 MB message, random bytes on the port and malformed statistics
// are all refused with a clear status, counted, and leave the running job's results exactly as a direct
// run's. Plus: no listening beyond loopback without a token, and TLS.
#include <signal.h>

#include <fstream>
#include <random>

#include "cluster.h"

namespace dtrn::coordinator::testing {
namespace {

using SecurityTest = ClusterTest;

// The DTRN_* environment an agent gave a worker process, read back from /proc (same user).
std::map<std::string, std::string> process_env(int pid) {
  std::map<std::string, std::string> env;
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::string entry;
  while (std::getline(in, entry, '\0')) {
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  return env;
}

grpc::Status heartbeat_as(v1::Workers::Stub* stub, const ClientOptions& client, const v1::WorkerRef& ref) {
  v1::HeartbeatRequest r;
  *r.mutable_worker() = ref;
  r.set_step(1);
  r.set_phase("train");
  v1::HeartbeatResponse resp;
  grpc::ClientContext c;
  prepare_context(&c, client, 2);
  return stub->Heartbeat(&c, r, &resp);
}

grpc::Status stream_one(v1::Workers::Stub* stub, const ClientOptions& client, const v1::StepStats& stats) {
  grpc::ClientContext c;
  prepare_context(&c, client, 5);
  v1::StreamStatsResponse resp;
  auto writer = stub->StreamStats(&c, &resp);
  writer->Write(stats);
  writer->WritesDone();
  return writer->Finish();
}

TEST_F(SecurityTest, RefusedCallsLeaveTheRunningJobUntouched) {
  const std::string token_file = dir("token");
  std::ofstream(token_file) << "s3cret-token-for-tests\n";
  start_coordinator({"--auth-token-file", token_file});
  client_.auth_token = "s3cret-token-for-tests";
  start_agent({"--auth-token-file", token_file});
  const std::string run = dir("run");
  const std::string id = submit(20, run);
  ASSERT_TRUE(eventually([&] { return get(id).step() >= 2; }, 120)) << get(id).DebugString();

  // No token, a wrong token: UNAUTHENTICATED, and counted.
  ClientOptions anonymous = client_, wrong = client_;
  anonymous.auth_token.clear();
  wrong.auth_token = "s3cret-token-for-tesTS";
  for (const auto* c : {&anonymous, &wrong}) {
    v1::ListJobsResponse list;
    grpc::ClientContext ctx;
    prepare_context(&ctx, *c, 2);
    const grpc::Status s = v1::Jobs::NewStub(*make_channel(*c))->ListJobs(&ctx, {}, &list);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << describe(s);
  }
  EXPECT_EQ(metric("dtrn_rpc_rejected_total{reason=\"unauthenticated\"}"), 2);

  // A forged identity: another rank, the right rank with a guessed secret, another job.
  const int pid = get(id).workers(0).pid();
  auto env = process_env(pid);
  ASSERT_FALSE(env["DTRN_WORKER_SECRET"].empty());
  v1::WorkerRef real;
  real.set_job_id(id);
  real.set_rank(0);
  real.set_generation(std::stoi(env["DTRN_GENERATION"]));
  real.set_secret(env["DTRN_WORKER_SECRET"]);
  auto stub = workers();
  v1::WorkerRef other_rank = real, guessed = real, other_job = real;
  other_rank.set_rank(1);
  guessed.set_secret(std::string(real.secret().size(), '0'));
  other_job.set_job_id("job-999999");
  for (const auto& ref : {other_rank, guessed, other_job}) {
    const grpc::Status s = heartbeat_as(stub.get(), client_, ref);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << describe(s);
  }
  EXPECT_EQ(metric("dtrn_rpc_rejected_total{reason=\"permission_denied\"}"), 3);

  // Malformed statistics under the real identity: refused before they reach the job.
  v1::StepStats bad;
  *bad.mutable_worker() = real;
  bad.set_step(1000000);
  auto* layer = bad.add_layers();
  layer->set_layer(1);
  layer->set_f(2.0);  // a fraction above 1
  grpc::Status s = stream_one(stub.get(), client_, bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(s);
  EXPECT_NE(s.error_message().find("f must lie in [0, 1]"), std::string::npos) << s.error_message();
  layer->set_f(0.5);
  bad.set_step(1);  // out of order: the worker is past step 1
  s = stream_one(stub.get(), client_, bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << describe(s);
  EXPECT_NE(s.error_message().find("arrived after step"), std::string::npos) << s.error_message();

  // A 100 MB message: refused by the 4 MiB limit.
  {
    v1::SubmitJobRequest huge;
    huge.mutable_spec()->set_config_yaml(std::string(100 << 20, 'x'));
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    prepare_context(&ctx, client_, 20);
    s = jobs()->SubmitJob(&ctx, huge, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << describe(s);
  }

  // Random bytes on the gRPC port: the connection is dropped, the service goes on.
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(client_.address.substr(client_.address.rfind(':') + 1))));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    std::mt19937 rng(7);
    std::string noise(1 << 20, '\0');
    for (auto& c : noise) c = static_cast<char>(rng());
    (void)::send(fd, noise.data(), noise.size(), MSG_NOSIGNAL);
    ::close(fd);
  }

  // The job finishes exactly as a direct run does, and the refusals left no trace in its series.
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString();
  EXPECT_EQ(metrics_without_timing(run), metrics_without_timing(root_ + "/direct"));
  EXPECT_EQ(metric("dtrn_job_step{job=\"" + id + "\"}"), 20);
  EXPECT_EQ(get(id).restarts(), 0);
  EXPECT_EQ(metric("dtrn_rpc_rejected_total{reason=\"invalid_argument\"}"), 2);
}

TEST_F(SecurityTest, ListeningBeyondLoopbackNeedsAToken) {
  const CommandResult r = run_command({kDtrn, "coordinator", "--state-dir", dir("state"), "--listen", "0.0.0.0:0",
                                       "--metrics-listen", "off"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("listening beyond loopback needs --auth-token-file"), std::string::npos) << r.output;
}

TEST_F(SecurityTest, TlsCoordinatorServesTlsClientsOnly) {
  const std::string openssl = find_binary("openssl");
  if (openssl.empty()) GTEST_SKIP() << "openssl not installed";
  const CommandResult cert = run_command({openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                          "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                                          "-keyout", dir("key.pem"), "-out", dir("cert.pem")});
  ASSERT_EQ(cert.code, 0) << cert.output;
  start_coordinator({"--tls-cert", dir("cert.pem"), "--tls-key", dir("key.pem")});
  EXPECT_NE(coordinator_->output().find("(TLS)"), std::string::npos);
  ClientOptions plaintext = client_;
  client_.tls_ca_file = dir("cert.pem");
  start_agent({"--tls-ca", dir("cert.pem")});
  const std::string id = submit(20, dir("run"));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(wait_state(id, v1::JOB_STATE_SUCCEEDED, 120)) << get(id).DebugString();
  v1::ListJobsResponse list;
  grpc::ClientContext ctx;
  prepare_context(&ctx, plaintext, 2);
  const grpc::Status s = v1::Jobs::NewStub(*make_channel(plaintext))->ListJobs(&ctx, {}, &list);
  EXPECT_FALSE(s.ok());  // a plaintext client cannot talk to a TLS port
}

}  // namespace
}  // namespace dtrn::coordinator::testing
