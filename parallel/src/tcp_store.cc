#include "dtrn/parallel/tcp_store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "dtrn/runtime/check.h"

namespace dtrn::parallel {
namespace {

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string from_hex(const std::string& hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(nibble(hex[2 * i]) * 16 + nibble(hex[2 * i + 1]));
  return out;
}

bool send_all(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// Reads one '\n'-terminated line (without it); false at EOF or error. Byte by byte: requests are rare and
// short, and no read-ahead buffer must outlive a call.
bool read_line(int fd, std::string* line) {
  line->clear();
  char c;
  while (true) {
    const ssize_t n = ::recv(fd, &c, 1, 0);
    if (n <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
}

std::string join(const std::set<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ",") + std::to_string(r);
  return out;
}

std::vector<int> parse_ranks(const std::string& text) {
  std::vector<int> out;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(std::stoi(item));
  }
  return out;
}

}  // namespace

// Rank 0's side: an accept thread and one thread per connection (a job has one connection per rank).
class TcpStore::Server {
 public:
  Server(int listen_fd, int world_size) : listen_fd_(listen_fd), world_size_(world_size) {
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~Server() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    accept_thread_.join();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
      threads.swap(client_threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  void accept_loop() {
    while (true) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      client_fds_.push_back(fd);
      client_threads_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    int rank = -1;
    bool said_bye = false;
    std::string line;
    while (read_line(fd, &line)) {
      std::istringstream in(line);
      std::string verb, key, value;
      in >> verb;
      std::string reply = "OK";
      if (verb == "HELLO") {
        in >> rank;
      } else if (verb == "SET") {
        in >> key >> value;
        {
          std::lock_guard<std::mutex> lock(mu_);
          values_[key] = value;
        }
        cv_.notify_all();
      } else if (verb == "GET") {
        in >> key;
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || values_.count(key) > 0; });
        if (stopping_) break;
        reply = "VAL " + values_[key];
      } else if (verb == "LOST") {
        std::lock_guard<std::mutex> lock(mu_);
        reply = "LOST " + join(lost_) + ";" + join(left_);
      } else if (verb == "BYE") {
        said_bye = true;
      }
      if (!send_all(fd, reply + "\n")) break;
      if (said_bye) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    // A rank that said BYE ended on purpose (an error it reported itself, or the end of the job); one
    // that did not was killed or crashed. Neither joins another collective.
    if (!stopping_ && rank >= 0 && rank < world_size_) (said_bye ? left_ : lost_).insert(rank);
  }

  int listen_fd_;
  int world_size_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, std::string> values_;
  std::set<int> lost_, left_;
  std::vector<int> client_fds_;
  std::vector<std::thread> client_threads_;
  std::thread accept_thread_;
};

StatusOr<std::unique_ptr<TcpStore>> TcpStore::Open(int rank, int world_size, const std::string& host, int port,
                                                   double timeout_s) {
  std::unique_ptr<TcpStore> store(new TcpStore());
  store->rank_ = rank;
  store->timeout_s_ = timeout_s;
  const std::string where = host + ":" + std::to_string(port);
  if (rank == 0) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 1024) != 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      return Status::IoError("job store: cannot listen on port " + std::to_string(port) + ": " + why);
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    store->port_ = ntohs(addr.sin_port);
    store->server_ = std::make_unique<Server>(fd, world_size);
  } else {
    store->port_ = port;
  }

  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string connect_host = rank == 0 ? "127.0.0.1" : host;
  if (::getaddrinfo(connect_host.c_str(), std::to_string(store->port_).c_str(), &hints, &found) != 0) {
    return Status::InvalidArgument("job store: cannot resolve host '" + connect_host + "'");
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::string last_error;
  while (true) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      store->fd_ = fd;
      break;
    }
    last_error = std::strerror(errno);
    ::close(fd);
    if (std::chrono::steady_clock::now() > deadline) {
      ::freeaddrinfo(found);
      return Status::IoError("job store: rank " + std::to_string(rank) + " cannot reach rank 0 at " + where +
                             " within " + std::to_string(static_cast<int>(timeout_s)) + " s: " + last_error);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::freeaddrinfo(found);
  store->request("HELLO " + std::to_string(rank));
  return store;
}

TcpStore::~TcpStore() {
  if (fd_ >= 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::string reply;
      if (send_all(fd_, "BYE\n")) read_line(fd_, &reply);
    }
    ::close(fd_);
  }
  server_.reset();
}

std::string TcpStore::request(const std::string& line) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string reply;
  DTRN_CHECK(send_all(fd_, line + "\n") && read_line(fd_, &reply), "job store: rank ", rank_,
             " lost its connection to rank 0 during '", line.substr(0, line.find(' ')), "'");
  return reply;
}

void TcpStore::set(const std::string& key, const std::string& value) { request("SET " + key + " " + to_hex(value)); }

std::string TcpStore::get(const std::string& key) {
  // A GET blocks in the server until the key is set; poll() bounds the wait here.
  std::lock_guard<std::mutex> lock(mu_);
  DTRN_CHECK(send_all(fd_, "GET " + key + "\n"), "job store: rank ", rank_, " lost its connection to rank 0");
  pollfd p{fd_, POLLIN, 0};
  DTRN_CHECK(::poll(&p, 1, static_cast<int>(timeout_s_ * 1000)) > 0, "job store: rank ", rank_, ": '", key,
             "' was not set within ", timeout_s_, " s");
  std::string reply;
  DTRN_CHECK(read_line(fd_, &reply) && reply.rfind("VAL ", 0) == 0, "job store: rank ", rank_,
             " lost its connection to rank 0 while waiting for '", key, "'");
  return from_hex(reply.substr(4));
}

TcpStore::Gone TcpStore::gone_ranks() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string reply;
  if (!send_all(fd_, "LOST\n") || !read_line(fd_, &reply)) return {{0}, {}};
  const std::string lists = reply.substr(std::min<size_t>(reply.size(), 5));
  const size_t semi = lists.find(';');
  return {parse_ranks(lists.substr(0, semi)), semi == std::string::npos ? std::vector<int>{} : parse_ranks(lists.substr(semi + 1))};
}

}  // namespace dtrn::parallel
