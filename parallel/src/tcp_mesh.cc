#include "tcp_mesh.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

namespace dtrn::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// Written in place of an address by a rank that is reached through MASTER_ADDR (rank 0, and any
// rank that reaches rank 0 over loopback, i.e. runs on rank 0's host).
constexpr char kViaMaster[] = "-";

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// The local address of the route to `host`: where peers on other hosts reach this one (a UDP
// connect sends nothing; it only picks the route). kViaMaster when the route is loopback or
// unknown.
std::string route_address(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), "9", &hints, &found) != 0) return kViaMaster;
  std::string out = kViaMaster;
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
    if (std::strncmp(text, "127.", 4) != 0) out = text;
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  return out;
}

bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool read_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

StatusOr<int> connect_to(const std::string& host, int port, Clock::time_point deadline,
                         const std::string& who) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return Status::InvalidArgument(who + ": cannot resolve host '" + host + "'");
  }
  std::string why;
  while (true) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
      ::freeaddrinfo(found);
      return fd;
    }
    why = std::strerror(errno);
    ::close(fd);
    if (Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::freeaddrinfo(found);
  return Status::IoError(who + ": cannot connect to " + host + ":" + std::to_string(port) + ": " +
                         why);
}

}  // namespace

TcpMesh::TcpMesh(int rank, int world_size, std::shared_ptr<Liveness> liveness)
    : rank_(rank), fds_(static_cast<size_t>(world_size), -1), liveness_(std::move(liveness)) {}

TcpMesh::~TcpMesh() {
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

StatusOr<std::shared_ptr<TcpMesh>> TcpMesh::Connect(TcpStore& store, int rank, int world_size,
                                                    const std::string& master_addr,
                                                    std::shared_ptr<Liveness> liveness,
                                                    double timeout_s) {
  std::shared_ptr<TcpMesh> mesh(new TcpMesh(rank, world_size, std::move(liveness)));
  const std::string who = "TCP communicator: rank " + std::to_string(rank);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));

  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, world_size) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listener);
    return Status::IoError(who + ": cannot listen: " + why);
  }
  const std::string host = host_name();
  store.set("tcp/" + std::to_string(rank),
            host + " " + (rank == 0 ? kViaMaster : route_address(master_addr)) + " " +
                std::to_string(ntohs(addr.sin_port)));

  // Connect to every lower rank (a connect completes in the peer's backlog, before it accepts, so
  // the order cannot deadlock), saying who we are; then accept every higher rank.
  for (int peer = 0; peer < rank; ++peer) {
    std::istringstream where(store.get("tcp/" + std::to_string(peer)));
    std::string peer_host, peer_addr;
    int port = 0;
    where >> peer_host >> peer_addr >> port;
    const std::string target =
        peer_host == host ? "127.0.0.1" : (peer_addr == kViaMaster ? master_addr : peer_addr);
    auto fd = connect_to(target, port, deadline, who + " (to rank " + std::to_string(peer) + ")");
    if (!fd.ok()) {
      ::close(listener);
      return fd.status();
    }
    mesh->fds_[peer] = *fd;
    const int32_t me = rank;
    if (!write_all(*fd, &me, sizeof me)) {
      ::close(listener);
      return Status::IoError(who + ": rank " + std::to_string(peer) +
                             " closed the connection at once");
    }
  }
  for (int accepted = 0; accepted < world_size - 1 - rank;) {
    pollfd p{listener, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) {
      if (Clock::now() > deadline) {
        ::close(listener);
        return Status::IoError(who + ": " + std::to_string(world_size - 1 - rank - accepted) +
                               " higher rank(s) did not connect within " +
                               std::to_string(static_cast<int>(timeout_s)) + " s");
      }
      continue;
    }
    const int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0) continue;
    // A rank says who it is at once; a stray connection that says nothing must not hold up the job.
    const timeval patience{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
    int32_t peer = -1;
    if (!read_all(fd, &peer, sizeof peer) || peer <= rank || peer >= world_size ||
        mesh->fds_[peer] >= 0) {
      ::close(fd);  // not one of this job's ranks
      continue;
    }
    mesh->fds_[peer] = fd;
    ++accepted;
  }
  ::close(listener);
  for (int fd : mesh->fds_) {
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return mesh;
}

void TcpMesh::lost(int peer, const std::string& what, double waited_s) {
  exit_lost_rank(rank_, what + " (its TCP connection closed)", {peer}, waited_s);
}

void TcpMesh::exchange(int to, const void* send, size_t n_send, int from, void* recv, size_t n_recv,
                       const std::string& what) {
  const auto started = Clock::now();
  const auto waited = [&] { return std::chrono::duration<double>(Clock::now() - started).count(); };
  const char* out = static_cast<const char*>(send);
  char* in = static_cast<char*>(recv);
  size_t sent = 0, got = 0;
  while (sent < n_send || got < n_recv) {
    pollfd p[2];
    int n = 0, si = -1, ri = -1;
    if (sent < n_send) {
      p[n] = {fds_[to], POLLOUT, 0};
      si = n++;
    }
    if (got < n_recv) {
      if (si >= 0 && to == from) {
        p[si].events |= POLLIN;
        ri = si;
      } else {
        p[n] = {fds_[from], POLLIN, 0};
        ri = n++;
      }
    }
    if (::poll(p, static_cast<nfds_t>(n), 100) > 0) {
      if (si >= 0 && (p[si].revents & (POLLOUT | POLLERR | POLLHUP))) {
        const ssize_t k = ::send(fds_[to], out + sent, n_send - sent, MSG_NOSIGNAL);
        if (k > 0)
          sent += static_cast<size_t>(k);
        else if (errno != EAGAIN && errno != EINTR)
          lost(to, what, waited());
      }
      if (ri >= 0 && (p[ri].revents & (POLLIN | POLLERR | POLLHUP))) {
        const ssize_t k = ::recv(fds_[from], in + got, n_recv - got, 0);
        if (k > 0)
          got += static_cast<size_t>(k);
        else if (k == 0 || (errno != EAGAIN && errno != EINTR))
          lost(from, what, waited());
      }
    }
    if (sent < n_send || got < n_recv) liveness_->check(what, started);
  }
}

}  // namespace dtrn::parallel
