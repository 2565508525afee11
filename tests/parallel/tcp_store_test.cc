// The job store over real loopback TCP: values cross between ranks (threads standing in for processes),
// a GET waits for the SET, and a rank whose connection drops without BYE is reported lost while one that
// says BYE is reported as having left.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "dtrn/parallel/tcp_store.h"

namespace dtrn::parallel {
namespace {

TEST(TcpStore, ValuesCrossRanksAndGetWaitsForSet) {
  auto server = TcpStore::Open(0, 3, "127.0.0.1", 0, 10);
  ASSERT_TRUE(server.ok()) << server.status().message();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  auto r1 = TcpStore::Open(1, 3, "127.0.0.1", port, 10);
  auto r2 = TcpStore::Open(2, 3, "127.0.0.1", port, 10);
  ASSERT_TRUE(r1.ok() && r2.ok());
  std::string got;
  std::thread waiter([&] { got = (*r2)->get("nccl_unique_id"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const std::string bytes("\x00\xff binary\n value", 16);
  (*r1)->set("nccl_unique_id", bytes);
  waiter.join();
  EXPECT_EQ(got, bytes);
  EXPECT_EQ((*server)->get("nccl_unique_id"), bytes);
}

TEST(TcpStore, ADroppedConnectionIsLostAndByeIsLeft) {
  auto server = TcpStore::Open(0, 3, "127.0.0.1", 0, 10);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  auto r1 = TcpStore::Open(1, 3, "127.0.0.1", port, 10);
  auto r2 = TcpStore::Open(2, 3, "127.0.0.1", port, 10);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_TRUE((*server)->gone_ranks().lost.empty());
  r2->reset();  // the destructor says BYE
  // A crash: the process's socket closes without BYE; fork a child that connects and dies by SIGKILL.
  const pid_t child = fork();
  if (child == 0) {
    auto lost = TcpStore::Open(1, 3, "127.0.0.1", port, 10);
    raise(SIGKILL);
  }
  int status = 0;
  waitpid(child, &status, 0);
  TcpStore::Gone gone;
  for (int i = 0; i < 50; ++i) {  // the server's connection thread sees the close asynchronously
    gone = (*r1)->gone_ranks();
    if (!gone.lost.empty() && !gone.left.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(gone.lost, std::vector<int>{1});
  EXPECT_EQ(gone.left, std::vector<int>{2});
}

TEST(TcpStore, NoServerIsAClearError) {
  auto s = TcpStore::Open(1, 2, "127.0.0.1", 1, 0.3);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("cannot reach rank 0 at 127.0.0.1:1"), std::string::npos)
      << s.status().message();
}

}  // namespace
}  // namespace dtrn::parallel
