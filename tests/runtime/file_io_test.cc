// The shared file helpers: whole-file round trips, the atomic write leaving no temporary behind,
// and errors that name the path with the right code (NotFound only for a missing file).
#include "dtrn/runtime/file_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace dtrn {
namespace {

namespace fs = std::filesystem;

class FileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dtrn_file_io_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(FileIoTest, AtomicWriteThenReadRoundTrips) {
  std::string data(100'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i % 251);
  ASSERT_TRUE(write_file_atomic(path("f"), "an older, shorter version").ok());
  ASSERT_TRUE(write_file_atomic(path("f"), data).ok());
  auto read = read_file(path("f"));
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ(*read, data);
  EXPECT_FALSE(fs::exists(path("f.tmp")));
  EXPECT_TRUE(sync_dir(dir_.string()).ok());
}

TEST_F(FileIoTest, ErrorsNameThePath) {
  Status missing = read_file(path("missing")).status();
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), path("missing") + ": No such file or directory");

  Status folder = read_file(dir_.string()).status();
  EXPECT_EQ(folder.code(), StatusCode::kIoError);
  EXPECT_EQ(folder.message(), dir_.string() + ": not a regular file");

  // The temporary file cannot be created in a folder that does not exist.
  Status unwritable = write_file_atomic(path("no/such/folder/f"), "x");
  EXPECT_EQ(unwritable.code(), StatusCode::kNotFound);
  EXPECT_EQ(unwritable.message(), path("no/such/folder/f.tmp") + ": No such file or directory");

  // Renaming a file over a non-empty folder fails; the temporary file is removed.
  fs::create_directories(path("taken/inside"));
  Status taken = write_file_atomic(path("taken"), "x");
  EXPECT_EQ(taken.code(), StatusCode::kIoError);
  EXPECT_EQ(taken.message().rfind(path("taken") + ": ", 0), 0u) << taken.message();
  EXPECT_FALSE(fs::exists(path("taken.tmp")));

  EXPECT_EQ(sync_dir(path("missing")).code(), StatusCode::kNotFound);
}

TEST_F(FileIoTest, ReadUpToStopsAtTheEnd) {
  ASSERT_TRUE(write_file_atomic(path("f"), "12345").ok());
  auto file = open_regular_file(path("f"));
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ(file->size, 5u);
  char buffer[16];
  auto n = read_up_to(file->fd, path("f"), buffer, sizeof buffer);
  ::close(file->fd);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buffer, *n), "12345");
}

}  // namespace
}  // namespace dtrn
