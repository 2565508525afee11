// The subcommands that talk to a coordinator (built only with it): the service, the agent, job
// submission, the local launcher and the live view; and what they share: the client flags and the
// printing of a job's events.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "../args.h"
#include "dtrn/coordinator/client.h"
#include "dtrn/v1/coordinator.pb.h"

namespace dtrn::cli {

int run_coordinator(int argc, char** argv);  // coordinator_command.cc
int run_agent(int argc, char** argv);        // agent_command.cc
int run_submit(int argc, char** argv);       // submit_command.cc
int run_launch(int argc, char** argv);       // launch_command.cc
int run_top(int argc, char** argv);          // top_command.cc

// --coordinator ADDR, --auth-token-file F, --tls-ca F.
std::vector<FlagSpec> client_flag_specs();
constexpr char kClientFlagsHelp[] =
    "  --coordinator ADDR     the coordinator's host:port (default 127.0.0.1:50051)\n"
    "  --auth-token-file F    the coordinator's bearer token, first line of F\n"
    "  --tls-ca F             connect with TLS, trusting the PEM certificate(s) in F\n";
StatusOr<coordinator::ClientOptions> client_options(const Args& args);

// SubmitJob; the new job's id, or the coordinator's refusal as one line.
StatusOr<std::string> submit_job(const coordinator::ClientOptions& options, const v1::JobSpec& spec);

// One line per event: state changes, routing events, log lines, and every `every`-th step summary.
void print_event(std::ostream& os, const v1::JobEvent& event, int64_t every);
// Follows a job over WatchJob until it ends; returns its final state (or UNSPECIFIED when the stream
// broke for good, with `error` set).
v1::JobState follow_job(const coordinator::ClientOptions& options, const std::string& job_id, int64_t every,
                        std::string* error);

}  // namespace dtrn::cli

namespace dtrn::cli {

// SIGINT and SIGTERM are blocked in the calling thread (call it before starting any thread, which then
// inherits the mask) and taken by wait_for_termination_signal(), so a service shuts down in order.
void block_termination_signals();
int wait_for_termination_signal();

}  // namespace dtrn::cli
