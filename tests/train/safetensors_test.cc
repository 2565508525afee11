// safetensors against the format as specified (huggingface/safetensors README): hand-built byte
// images are the independent reference for the header layout, and files written here for every kind
// of corruption check that reading fails with one Status naming the file and the problem. Values
// must round-trip bit for bit (no tolerance: the bytes are copied, never converted).
#include "dtrn/train/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace dtrn::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dtrn_st_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void dump(const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
  }
  // A file image: the 8-byte little-endian length, the header text, then `data`.
  static std::string image(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
    return out + header + data;
  }
  // Reads `bytes` written to a file and returns the error (the read must fail).
  Status read_error(const std::string& name, const std::string& bytes) {
    dump(path(name), bytes);
    auto r = read_safetensors(path(name));
    EXPECT_FALSE(r.ok()) << name;
    return r.ok() ? Status::Ok() : r.status();
  }

  std::string dir_;
};

std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.nbytes() ? c.raw_data() : nullptr), c.nbytes());
}

TEST_F(SafetensorsTest, EveryDtypeAndShapeRoundTripsBitForBit) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f64",
       Tensor::from_vector({1.5, -0.0, inf, 1e-300, 3.141592653589793, -7}, {2, 3}, DType::kF64)},
      {"f32", Tensor::from_vector({0.1, -2.5, 1e30, 7}, {4}, DType::kF32)},
      {"bf16", Tensor::from_vector({1, -2, 0.5, 3.75, -0.125, 100}, {3, 2}, DType::kBF16)},
      {"i32", Tensor::from_ints({-1, 0, 2147483647, -2147483648LL, 5}, {5}, DType::kI32)},
      {"i64 scalar", Tensor::from_ints({-(int64_t(1) << 62)}, {}, DType::kI64)},
      {"empty f32", Tensor::zeros({0, 3}, DType::kF32)},
      {"empty i64", Tensor::zeros({2, 0}, DType::kI64)},
      {"model.layers.0.self_attn.q_proj.weight", Tensor::normal({3, 4}, 0, 1, 7, 1)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"dtrn.layout", "TDDT"}};
  ASSERT_TRUE(write_safetensors(path("a.safetensors"), tensors, metadata).ok());
  auto read = read_safetensors(path("a.safetensors"));
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->metadata, metadata);
  ASSERT_EQ(read->tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, got] = read->tensors[i];
    EXPECT_EQ(name, tensors[i].first) << "file order";
    EXPECT_EQ(got.dtype(), tensors[i].second.dtype()) << name;
    EXPECT_EQ(got.shape(), tensors[i].second.shape()) << name;
    EXPECT_EQ(bytes_of(got), bytes_of(tensors[i].second)) << name;
    EXPECT_EQ(read->find(name), &got);
  }
  EXPECT_EQ(read->find("absent"), nullptr);
}

TEST_F(SafetensorsTest, NonContiguousTensorsAreWrittenInLogicalOrder) {
  Tensor t = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);  // [3, 2]
  ASSERT_TRUE(write_safetensors(path("t.safetensors"), {{"t", t}}).ok());
  auto read = read_safetensors(path("t.safetensors"));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->tensors[0].second.shape(), (Shape{3, 2}));
  EXPECT_EQ(read->tensors[0].second.to_vector(), (std::vector<double>{1, 4, 2, 5, 3, 6}));
}

TEST_F(SafetensorsTest, HeaderIsExactlyTheFormat) {
  // Expected bytes written out by hand from the format: compact JSON, __metadata__ first, tensors
  // in the order given with contiguous offsets, padded with spaces so that 8 + header is a multiple
  // of 8.
  Tensor a = Tensor::from_vector({1, 2}, {2}, DType::kF32);
  Tensor b = Tensor::from_ints({7}, {}, DType::kI64);
  ASSERT_TRUE(write_safetensors(path("h.safetensors"), {{"b", b}, {"a", a}}, {{"k", "v"}}).ok());
  const std::string json =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  std::string header = json + std::string((8 - json.size() % 8) % 8, ' ');
  EXPECT_EQ(slurp(path("h.safetensors")), image(header, bytes_of(b) + bytes_of(a)));
  EXPECT_EQ(header.size() % 8, 0u);

  // No metadata: no __metadata__ key at all.
  ASSERT_TRUE(write_safetensors(path("n.safetensors"), {{"a", a}}).ok());
  const std::string file = slurp(path("n.safetensors"));
  EXPECT_EQ(file.substr(8, 1), "{");
  EXPECT_EQ(file.find("__metadata__"), std::string::npos);
}

TEST_F(SafetensorsTest, ReadsFilesLaidOutByOtherWriters) {
  // Header order differs from data order, no padding, keys in another order: all allowed by the
  // format.
  Tensor x = Tensor::from_vector({1, 2, 3}, {3}, DType::kF32);
  Tensor y = Tensor::from_vector({4, 5}, {1, 2}, DType::kF64);
  const std::string header =
      R"({"x":{"data_offsets":[16,28],"shape":[3],"dtype":"F32"},"y":{"dtype":"F64","shape":[1,2],)"
      R"("data_offsets":[0,16]},"__metadata__":{"format":"pt"}})";
  dump(path("o.safetensors"), image(header, bytes_of(y) + bytes_of(x)));
  auto read = read_safetensors(path("o.safetensors"));
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->tensors.size(), 2u);
  EXPECT_EQ(read->tensors[0].first, "y");  // file (data) order
  EXPECT_EQ(read->find("x")->to_vector(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(read->find("y")->to_vector(), (std::vector<double>{4, 5}));
  EXPECT_EQ(read->metadata.at("format"), "pt");
}

TEST_F(SafetensorsTest, CorruptFilesNameTheFileAndTheProblem) {
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\1');
  struct Case {
    std::string name, bytes, problem;
  };
  std::string length_only(8, '\0');
  length_only[0] = char(200);  // claims a 200-byte header in a 12-byte file
  const std::vector<Case> cases = {
      {"short.safetensors", "abcde", "truncated: 5 bytes"},
      {"len.safetensors", length_only + "{}  ",
       "header length 200 runs past the end of the file (12 bytes)"},
      {"json.safetensors", image(R"({"a":{"dtype":)", ""), "bad header JSON"},
      {"array.safetensors", image("[1,2]   ", ""), "not a JSON object"},
      {"range.safetensors",
       image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"),
       "tensor 'a': data_offsets [0, 8] run past the end of the data (4 bytes)"},
      {"size.safetensors",
       image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8),
       "tensor 'a': data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12"},
      {"dtype.safetensors",
       image(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data8),
       "tensor 'a': unknown dtype 'Q4'"},
      {"shape.safetensors",
       image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8),
       "tensor 'a': \"shape\" holds -2"},
      {"overlap.safetensors",
       image("{" + ok_entry + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8),
       "tensor 'b' overlaps tensor 'a'"},
      {"hole.safetensors",
       image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8), "leaving a hole"},
      {"tail.safetensors", image("{" + ok_entry + "}", data8 + "xx"),
       "2 bytes after the last tensor"},
      {"meta.safetensors", image(R"({"__metadata__":{"n":3}})", ""), "__metadata__ value of 'n'"},
  };
  for (const Case& c : cases) {
    Status s = read_error(c.name, c.bytes);
    EXPECT_THAT(s.message(), HasSubstr(path(c.name))) << c.name;
    EXPECT_THAT(s.message(), HasSubstr(c.problem)) << c.name;
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << c.name;
  }

  // A good file cut short: its header now points past the end of the data.
  ASSERT_TRUE(write_safetensors(path("good.safetensors"), {{"w", Tensor::zeros({16})}}).ok());
  std::string good = slurp(path("good.safetensors"));
  Status cut = read_error("cut.safetensors", good.substr(0, good.size() - 3));
  EXPECT_THAT(cut.message(), HasSubstr("run past the end of the data"));

  auto missing = read_safetensors(path("missing.safetensors"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(path("missing.safetensors")));
}

TEST_F(SafetensorsTest, WriteRejectsReservedAndRepeatedNames) {
  Tensor t = Tensor::zeros({1});
  EXPECT_THAT(write_safetensors(path("r.safetensors"), {{"__metadata__", t}}).message(),
              HasSubstr("reserved or repeated"));
  EXPECT_THAT(write_safetensors(path("r.safetensors"), {{"a", t}, {"a", t}}).message(),
              HasSubstr("'a'"));
  EXPECT_EQ(write_safetensors(dir_ + "/no/such/dir/x.safetensors", {{"a", t}}).code(),
            StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, DigestCoversTheWholeFile) {
  // sha256sum (coreutils) is the independent reference.
  std::string written, read;
  ASSERT_TRUE(write_safetensors(path("d.safetensors"), {{"a", Tensor::normal({5, 3}, 0, 1, 1, 2)}},
                                {{"k", "v"}}, &written)
                  .ok());
  ASSERT_TRUE(read_safetensors(path("d.safetensors"), &read).ok());
  std::string cmd = "sha256sum '" + path("d.safetensors") + "' > '" + path("sum") + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(written, slurp(path("sum")).substr(0, 64));
  EXPECT_EQ(read, written);
}

}  // namespace
}  // namespace dtrn::train
