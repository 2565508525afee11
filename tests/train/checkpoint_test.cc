// Checkpoints and exports on a tiny model (4 layers TDDT, d_model 8, vocab 30 padded to 64) on the
// CPU: save -> load must reproduce parameters, AdamW moments and progress bit for bit (fp32 saved,
// fp32 model: no tolerance); corruption, crashes mid-save (a write that fails with EFBIG under
// RLIMIT_FSIZE) and mismatched models must give one error naming the file or tensor and lose
// nothing already saved.
#include "dtrn/train/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "checkpoint_format.h"
#include "dtrn/train/safetensors.h"
#include "tiny_model.h"

namespace dtrn::train {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using Json = nlohmann::json;

model::ModelConfig tiny(const std::string& layout = "TDDT") { return tiny_model(4, layout); }

std::unique_ptr<model::DtrnModel> make_model(uint64_t seed, const model::ModelConfig& c = tiny()) {
  auto m =
      std::make_unique<model::DtrnModel>(c, model::RoutingConfig{}, Device::cpu(), DType::kF32);
  m->init(seed);
  return m;
}

std::unique_ptr<AdamW> make_adamw(const model::DtrnModel& m) {
  std::vector<ParamGroupEntry> entries;
  for (const auto& p : m.parameters()) entries.push_back({p.name, p.tensor, p.decay, Tensor(), false});
  return std::make_unique<AdamW>(entries, AdamWOptions{});
}

// Two AdamW steps on fixed random gradients, so that parameters and both moments are non-trivial.
void train_two_steps(model::DtrnModel& m, AdamW& opt) {
  for (int step = 0; step < 2; ++step) {
    uint64_t stream = 0;
    for (const auto& p : m.parameters())
      p.tensor.set_grad(Tensor::normal(p.tensor.shape(), 0, 1, 3 + step, ++stream));
    opt.step(1e-2);
  }
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string sha256sum(const std::string& p) {  // coreutils, the independent reference
  const std::string out = p + ".sum";
  EXPECT_EQ(std::system(("sha256sum '" + p + "' > '" + out + "'").c_str()), 0);
  std::string sum = slurp(out).substr(0, 64);
  fs::remove(out);
  return sum;
}

// Exact equality of every element (values compared as doubles: exact for f32 and bf16).
void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(a.to_vector(), b.to_vector()) << what;
}

void flip_byte(const std::string& p, int64_t from_end) {
  std::fstream f(p, std::ios::binary | std::ios::in | std::ios::out);
  f.seekg(-from_end, std::ios::end);
  char c;
  f.get(c);
  f.seekp(-from_end, std::ios::end);
  f.put(char(c ^ 0x10));
}

std::map<std::string, Tensor> params_by_name(const model::DtrnModel& m) {
  std::map<std::string, Tensor> out;
  for (const auto& p : m.parameters()) out[p.name] = p.tensor.clone();
  return out;
}

// The one shard file of a one-process checkpoint.
std::string only_shard(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") return e.path().filename();
  }
  return "";
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "dtrn_ckpt_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    run_ = tmpl;
    model_ = make_model(1);
    opt_ = make_adamw(*model_);
    train_two_steps(*model_, *opt_);
  }
  void TearDown() override { fs::remove_all(run_); }

  TrainProgress progress(int64_t step) const {
    TrainProgress p;
    p.step = step;
    p.tokens = step * 1000 + 7;
    p.sampler = {3, 17};
    p.seed = 0xFFFFFFFFFFFFFFF0ull;  // needs all 64 bits
    p.samples = step * 4;
    p.monitor = {{1, 5, 0}, {2, 0, 3}};
    return p;
  }
  std::string save(int64_t step, int64_t keep = 0) {
    auto r = save_checkpoint(run_, *model_, *opt_, progress(step), "model:\n  d_model: 8\n", {keep});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : "";
  }
  std::set<std::string> checkpoint_folders() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(run_ + "/checkpoints"))
      names.insert(e.path().filename());
    return names;
  }

  std::string run_;
  std::unique_ptr<model::DtrnModel> model_;
  std::unique_ptr<AdamW> opt_;
};

TEST_F(CheckpointTest, SaveThenLoadIsBitIdentical) {
  const std::string dir = save(7);
  EXPECT_EQ(dir, run_ + "/checkpoints/step-00000007");
  EXPECT_EQ(checkpoint_folders(), (std::set<std::string>{"latest", "step-00000007"}));

  auto fresh = make_model(99);
  auto fresh_opt = make_adamw(*fresh);
  TrainProgress loaded;
  Status s = load_checkpoint(dir, fresh.get(), fresh_opt.get(), &loaded);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const auto want = model_->parameters();
  const auto got = fresh->parameters();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    expect_same(got[i].tensor, want[i].tensor, want[i].name);
    expect_same(fresh_opt->exp_avg()[i], opt_->exp_avg()[i], want[i].name + " exp_avg");
    expect_same(fresh_opt->exp_avg_sq()[i], opt_->exp_avg_sq()[i], want[i].name + " exp_avg_sq");
  }
  EXPECT_GT(opt_->exp_avg_sq()[0].to_vector()[0], 0.0)
      << "moments must be non-trivial for this test";
  EXPECT_EQ(fresh_opt->step_count(), 2);
  EXPECT_EQ(loaded.step, 7);
  EXPECT_EQ(loaded.tokens, 7007);
  EXPECT_EQ(loaded.sampler, (data::SamplerState{3, 17}));
  EXPECT_EQ(loaded.seed, 0xFFFFFFFFFFFFFFF0ull);
  EXPECT_EQ(loaded.samples, 28);
  ASSERT_EQ(loaded.monitor.size(), 2u);
  EXPECT_EQ(loaded.monitor[1].layer, 2);
  EXPECT_EQ(loaded.monitor[1].high, 3);
  EXPECT_EQ(loaded.monitor[0].low, 5);
  EXPECT_EQ(read_checkpoint_config(dir).value(), "model:\n  d_model: 8\n");

  // Loading without an optimizer touches only the model.
  auto third = make_model(5);
  ASSERT_TRUE(load_checkpoint(dir, third.get(), nullptr, nullptr).ok());
  expect_same(third->parameters()[0].tensor, want[0].tensor, want[0].name);
}

TEST_F(CheckpointTest, ManifestRecordsTheShardAndEverySliceIsDescribed) {
  const std::string dir = save(3);
  const std::string shard = only_shard(dir);
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.insert(e.path().filename());
  EXPECT_EQ(files, (std::set<std::string>{"manifest.json", shard}));
  EXPECT_EQ(slurp(run_ + "/checkpoints/latest"), "step-00000003\n");
  Json m = Json::parse(slurp(dir + "/manifest.json"));
  EXPECT_EQ(m["format"], "dtrn-checkpoint");
  EXPECT_EQ(m["version"], 2);
  EXPECT_EQ(m["step"], 3);
  EXPECT_EQ(m["tokens"], 3007);
  EXPECT_EQ(m["samples"], 12);
  EXPECT_EQ(m["optimizer_step"], 2);
  EXPECT_EQ(m["sampler"]["epoch"], 3);
  EXPECT_EQ(m["sampler"]["next_sample"], 17);
  EXPECT_EQ(m["rng"]["seed"].get<uint64_t>(), 0xFFFFFFFFFFFFFFF0ull);
  EXPECT_EQ(m["layout"], Json::parse(R"({"dp": 1, "tp": 1, "zero": 0})"));
  EXPECT_EQ(m["config"], "model:\n  d_model: 8\n");
  ASSERT_EQ(m["shards"].size(), 1u);
  EXPECT_EQ(m["shards"][0]["file"], shard);
  EXPECT_EQ(m["shards"][0]["bytes"].get<uint64_t>(), fs::file_size(dir + "/" + shard));
  // The header digest, against coreutils over the header's bytes.
  const std::string bytes = slurp(dir + "/" + shard);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  std::ofstream(run_ + "/header", std::ios::binary) << bytes.substr(0, 8 + header_len);
  EXPECT_EQ(m["shards"][0]["header_sha256"], sha256sum(run_ + "/header"));
  // A plain safetensors file: parameters fp32 under Hugging Face names, moments "<param>.exp_avg(_sq)",
  // each described as a whole-tensor slice with the sha256 of its bytes.
  auto contents = read_safetensors(dir + "/" + shard);
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(contents->tensors.size(), 3 * model_->parameters().size());
  Json slices = Json::parse(contents->metadata.at("dtrn.slices"));
  for (const auto& [name, t] : contents->tensors) {
    EXPECT_EQ(t.dtype(), DType::kF32) << name;
    EXPECT_EQ(slices[name]["global_shape"].get<Shape>(), t.shape()) << name;
    EXPECT_EQ(slices[name]["offsets"].get<std::vector<int64_t>>(), std::vector<int64_t>(t.shape().size(), 0));
  }
  std::ofstream(run_ + "/norm", std::ios::binary)
      << std::string(static_cast<const char*>(contents->find("model.norm.weight")->raw_data()),
                     contents->find("model.norm.weight")->nbytes());
  EXPECT_EQ(slices["model.norm.weight"]["sha256"], sha256sum(run_ + "/norm"));
  EXPECT_NE(contents->find("model.layers.1.router.2.bias.exp_avg_sq"), nullptr);
}

TEST_F(CheckpointTest, AVersion1CheckpointIsRefusedInOneLine) {
  const std::string dir = run_ + "/checkpoints/step-00000005";
  fs::create_directories(dir);
  std::ofstream(dir + "/manifest.json") << R"({"format": "dtrn-checkpoint", "version": 1, "step": 5})";
  Status s = verify_checkpoint(dir);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr(dir + "/manifest.json: a version 1 (single-process) checkpoint"));
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  auto fresh = make_model(99);
  EXPECT_EQ(load_checkpoint(dir, fresh.get(), nullptr, nullptr).code(), StatusCode::kFailedPrecondition);
}

TEST_F(CheckpointTest, ResolvePicksTheNewestValidCheckpoint) {
  save(1);
  save(2);
  const std::string step3 = save(3);
  const std::string root = run_ + "/checkpoints";
  // Newer-looking folders that are not checkpoints: an unfinished save and one without a manifest.
  fs::copy(step3, root + "/step-00000009.tmp-123");
  fs::copy(step3, root + "/step-00000008");
  fs::remove(root + "/step-00000008/manifest.json");
  EXPECT_EQ(resolve_checkpoint(run_).value(), step3);
  EXPECT_EQ(resolve_checkpoint(root).value(), step3);
  EXPECT_EQ(resolve_checkpoint(root + "/step-00000002").value(), root + "/step-00000002");

  flip_byte(step3 + "/" + only_shard(step3), 1);  // newest is now corrupt: fall back to step 2
  EXPECT_EQ(resolve_checkpoint(run_).value(), root + "/step-00000002");

  fs::create_directories(run_ + "/empty");
  auto none = resolve_checkpoint(run_ + "/empty");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr(run_ + "/empty"));
  EXPECT_EQ(resolve_checkpoint(run_ + "/absent").status().code(), StatusCode::kNotFound);
}

TEST_F(CheckpointTest, VerifyDetectsAFlippedBitAnywhereAndLoadRefusesIt) {
  const std::string dir = save(4);
  ASSERT_TRUE(verify_checkpoint(dir).ok());
  const std::string shard = dir + "/" + only_shard(dir);
  const std::string pristine = slurp(shard);
  // One flipped bit at many places of the shard: header length, header, every part of the data.
  for (size_t at = 0; at < pristine.size(); at += 97) {
    std::string damaged = pristine;
    damaged[at] ^= 0x04;
    std::ofstream(shard, std::ios::binary | std::ios::trunc) << damaged;
    Status s = verify_checkpoint(dir);
    ASSERT_FALSE(s.ok()) << "bit flipped at byte " << at << " went unnoticed";
    EXPECT_THAT(s.message(), HasSubstr(shard)) << at;
    EXPECT_EQ(s.message().find('\n'), std::string::npos);
  }
  // In the data (of the first tensor, a parameter: a load reads and verifies only what it needs), the
  // message names the tensor; load refuses and leaves the model as it was.
  uint64_t header_len = 0;
  std::memcpy(&header_len, pristine.data(), sizeof header_len);
  std::string damaged = pristine;
  damaged[sizeof header_len + header_len + 2] ^= 0x01;
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << damaged;
  EXPECT_THAT(verify_checkpoint(dir).message(), HasSubstr("tensor '"));
  EXPECT_THAT(verify_checkpoint(dir).message(), HasSubstr("sha256 mismatch"));
  auto fresh = make_model(99);
  const auto before = params_by_name(*fresh);
  Status s = load_checkpoint(dir, fresh.get(), nullptr, nullptr);
  EXPECT_THAT(s.message(), HasSubstr("sha256 mismatch"));
  for (const auto& p : fresh->parameters()) expect_same(p.tensor, before.at(p.name), p.name);

  // Truncated: caught by its size; missing: named; the manifest itself is checksummed.
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << pristine.substr(0, pristine.size() - 4);
  EXPECT_THAT(verify_checkpoint(dir).message(), HasSubstr(shard + ": " + std::to_string(pristine.size() - 4) + " bytes"));
  fs::remove(shard);
  EXPECT_THAT(verify_checkpoint(dir).message(), HasSubstr(shard));
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << pristine;
  ASSERT_TRUE(verify_checkpoint(dir).ok());
  std::string manifest = slurp(dir + "/manifest.json");
  manifest[manifest.find("\"step\": 4") + 8] = '5';
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << manifest;
  EXPECT_THAT(verify_checkpoint(dir).message(), HasSubstr("manifest.json: checksum mismatch"));
  fs::remove(dir + "/manifest.json");
  EXPECT_EQ(verify_checkpoint(dir).code(), StatusCode::kNotFound);
}

TEST_F(CheckpointTest, RetentionKeepsTheNewestValidAndEveryNth) {
  save(1, 2);
  save(2, 2);
  save(3, 2);
  EXPECT_EQ(checkpoint_folders(), (std::set<std::string>{"latest", "step-00000002", "step-00000003"}));
  save(4, 0);  // keep 0 keeps all
  EXPECT_EQ(checkpoint_folders().size(), 4u);
  // Saving a step again (a run resumed from an older checkpoint) replaces it; its old shard goes.
  save(3, 0);
  EXPECT_TRUE(verify_checkpoint(run_ + "/checkpoints/step-00000003").ok());
  EXPECT_EQ(std::distance(fs::directory_iterator(run_ + "/checkpoints/step-00000003"), fs::directory_iterator()), 2);
  // A corrupt newer checkpoint does not count towards keep: step 3, the newest valid one after the
  // new step 5, stays; step 2 goes.
  const std::string step4 = run_ + "/checkpoints/step-00000004";
  flip_byte(step4 + "/" + only_shard(step4), 3);
  auto r = save_checkpoint(run_, *model_, *opt_, progress(5), "x", {2, 0});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(checkpoint_folders(), (std::set<std::string>{"latest", "step-00000003", "step-00000004", "step-00000005"}));
  // keep_every pins multiples of it.
  r = save_checkpoint(run_, *model_, *opt_, progress(6), "x", {1, 2});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(checkpoint_folders(), (std::set<std::string>{"latest", "step-00000004", "step-00000006"}));
}

// Lowers the soft file-size limit so that writes past `bytes` fail with EFBIG (SIGXFSZ ignored).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit lowered = old_;
    lowered.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lowered);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  rlimit old_;
  sighandler_t old_handler_;
};

// A failed export names the file the user asked for, never the temporary file written beside it, and
// leaves neither behind; the resolver reports the corrupt newer checkpoint it passes over.
TEST_F(CheckpointTest, AFailedExportNamesTheRequestedFileAndSkippedCheckpointsAreReported) {
  const std::string step1 = save(1);
  const std::string out = run_ + "/export.safetensors";
  Status failed;
  {
    FileSizeLimit limit(4096);
    failed = export_safetensors(step1, out);
  }
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.message(), out + ": File too large");
  EXPECT_FALSE(fs::exists(out));
  for (const auto& e : fs::directory_iterator(run_)) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);

  const std::string step2 = save(2);
  flip_byte(step2 + "/" + only_shard(step2), 100);
  std::vector<std::string> skipped;
  EXPECT_EQ(resolve_checkpoint(run_, &skipped).value(), step1);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], ::testing::StartsWith("skipped " + step2 + ", which fails verification: " + step2 +
                                                "/" + only_shard(step2) + ": tensor '"));
}

TEST_F(CheckpointTest, LoadIntoADifferentModelNamesTheTensor) {
  const std::string dir = save(1);
  model::ModelConfig wider = tiny();
  wider.d_ff = 16;
  auto other = make_model(2, wider);
  const auto before = params_by_name(*other);
  Status s = load_checkpoint(dir, other.get(), nullptr, nullptr);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'model.layers.0.mlp.gate_proj.weight' has shape [12, 8], "
                        "the model expects [16, 8]"));
  for (const auto& p : other->parameters()) expect_same(p.tensor, before.at(p.name), p.name);

  auto relaid = make_model(2, tiny("TTDT"));  // layer 1 has no router in this model
  EXPECT_THAT(load_checkpoint(dir, relaid.get(), nullptr, nullptr).message(),
              HasSubstr("unexpected tensor 'model.layers.1.router.0.weight'"));
}

std::vector<std::string> expected_export_names(const std::string& layout) {
  std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
  for (size_t l = 0; l < layout.size(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* s :
         {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
          "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"}) {
      names.push_back(p + s);
    }
    if (layout[l] == 'D') {
      for (const char* s :
           {"router.0.weight", "router.0.bias", "router.2.weight", "router.2.bias"}) {
        names.push_back(p + s);
      }
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST_F(CheckpointTest, ExportUsesHuggingFaceNamesAndRoundTrips) {
  const std::string dir = save(5);
  const std::string out = run_ + "/export.safetensors";
  ASSERT_TRUE(export_safetensors(dir, out).ok());
  auto file = read_safetensors(out);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  std::vector<std::string> names;
  for (const auto& [name, t] : file->tensors) {
    names.push_back(name);
    EXPECT_EQ(t.dtype(), DType::kF32) << name;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, expected_export_names("TDDT"));
  EXPECT_EQ(file->find("model.embed_tokens.weight")->shape(), (Shape{64, 8}));
  EXPECT_EQ(file->find("model.layers.0.self_attn.k_proj.weight")->shape(), (Shape{4, 8}));

  EXPECT_EQ(file->metadata.at("dtrn.layout"), "TDDT");
  EXPECT_EQ(file->metadata.at("format"), "pt");
  Json cfg = Json::parse(file->metadata.at("dtrn.model"));
  EXPECT_EQ(cfg, Json::parse(R"({"d_model":8,"n_layers":4,"n_heads":2,"n_kv_heads":1,"d_ff":12,)"
                             R"("vocab_size":30,"padded_vocab":64,"seq_len":8,"norm_eps":1e-5,)"
                             R"("rope_theta":10000.0})"));

  auto fresh = make_model(42);
  ASSERT_TRUE(init_from_safetensors(out, fresh.get()).ok());
  const auto want = model_->parameters();
  const auto got = fresh->parameters();
  for (size_t i = 0; i < want.size(); ++i) expect_same(got[i].tensor, want[i].tensor, want[i].name);

  EXPECT_THAT(export_safetensors(run_ + "/absent", out).message(), HasSubstr(run_ + "/absent"));
}

TEST_F(CheckpointTest, TheRoutingStateIsSavedRestoredExactlyAndExported) {
  // Values with no short decimal form: a lossy text round trip would change their last bits.
  const model::RouterState state{true, {1.0 / 3.0, -std::exp(1.0) * 1e-7}, {0.1 + 0.2, -5e-324}};
  model_->set_router_state(state);
  const std::string dir = save(4);
  auto fresh = make_model(8);
  EXPECT_FALSE(fresh->router_state().initialized);
  ASSERT_TRUE(load_checkpoint(dir, fresh.get(), nullptr, nullptr).ok());
  EXPECT_TRUE(fresh->router_state().initialized);
  EXPECT_EQ(fresh->router_state().bias, state.bias);
  EXPECT_EQ(fresh->router_state().multiplier, state.multiplier);

  // The export carries the biases; a model started from it routes with them.
  const std::string out = run_ + "/biased.safetensors";
  ASSERT_TRUE(export_safetensors(dir, out).ok());
  auto third = make_model(9);
  ASSERT_TRUE(init_from_safetensors(out, third.get()).ok());
  EXPECT_TRUE(third->router_state().initialized);
  EXPECT_EQ(third->router_state().bias, state.bias);

  // A state for another number of D layers is refused naming the manifest (written with a valid
  // checksum, so that the size check is what refuses it).
  auto manifest = read_manifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status().message();
  manifest->router.bias.push_back(0.5);
  std::ofstream(dir + "/manifest.json", std::ios::trunc) << manifest_text(*manifest);
  EXPECT_THAT(load_checkpoint(dir, fresh.get(), nullptr, nullptr).message(),
              HasSubstr("manifest.json: routing state for 3 D layers, the model has 2"));
}

TEST(InitFrom, DenseLlamaFileLeavesRoutersAsInitialised) {
  const std::string dir =
      (fs::temp_directory_path() / ("dtrn_init_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  auto dense = make_model(5, tiny("dense"));
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& p : dense->parameters()) tensors.emplace_back(p.name, p.tensor.to(DType::kBF16));
  ASSERT_TRUE(write_safetensors(dir + "/llama.safetensors", tensors).ok());

  auto bilayer = make_model(9, tiny("bilayer"));  // TTDT
  const auto before = params_by_name(*bilayer);
  Status s = init_from_safetensors(dir + "/llama.safetensors", bilayer.get());
  ASSERT_TRUE(s.ok()) << s.ToString();
  int routers = 0;
  for (const auto& p : bilayer->parameters()) {
    if (p.name.find(".router.") != std::string::npos) {
      ++routers;
      expect_same(p.tensor, before.at(p.name), p.name);
    } else {
      // bf16 in the file: the model holds exactly the bf16 values, widened.
      const Tensor* src = nullptr;
      for (const auto& [n, t] : tensors)
        if (n == p.name) src = &t;
      ASSERT_NE(src, nullptr) << p.name;
      expect_same(p.tensor, src->to(DType::kF32), p.name);
    }
  }
  EXPECT_EQ(routers, 4);
  fs::remove_all(dir);
}

TEST(InitFrom, UnpaddedEmbeddingAndShapeMismatch) {
  const std::string dir =
      (fs::temp_directory_path() / ("dtrn_init2_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  auto source = make_model(5);
  auto write_with_embed_rows = [&](const std::string& file, int64_t rows) {
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& p : source->parameters()) {
      const bool embed = p.name == "model.embed_tokens.weight";
      tensors.emplace_back(p.name, embed ? p.tensor.narrow(0, 0, rows) : p.tensor);
    }
    return write_safetensors(file, tensors);
  };
  ASSERT_TRUE(write_with_embed_rows(dir + "/v30.safetensors", 30).ok());
  auto target = make_model(9);
  const Tensor embed_before = target->parameters()[0].tensor.clone();
  ASSERT_TRUE(init_from_safetensors(dir + "/v30.safetensors", target.get()).ok());
  const Tensor embed = target->parameters()[0].tensor;
  expect_same(embed.narrow(0, 0, 30), source->parameters()[0].tensor.narrow(0, 0, 30),
              "rows 0..29");
  expect_same(embed.narrow(0, 30, 34), embed_before.narrow(0, 30, 34), "rows 30..63");

  ASSERT_TRUE(write_with_embed_rows(dir + "/v29.safetensors", 29).ok());
  EXPECT_THAT(init_from_safetensors(dir + "/v29.safetensors", target.get()).message(),
              HasSubstr("tensor 'model.embed_tokens.weight' has shape [29, 8], the model expects "
                        "[64, 8] (or at least 30 rows)"));

  model::ModelConfig wider = tiny();
  wider.d_model = 16;
  auto big = make_model(3, wider);
  Status s = init_from_safetensors(dir + "/v30.safetensors", big.get());
  EXPECT_THAT(s.message(), HasSubstr(dir + "/v30.safetensors"));
  EXPECT_THAT(s.message(), HasSubstr("tensor 'model.embed_tokens.weight' has shape [30, 8]"));

  std::vector<std::pair<std::string, Tensor>> partial = {
      {"model.embed_tokens.weight", source->parameters()[0].tensor}};
  ASSERT_TRUE(write_safetensors(dir + "/partial.safetensors", partial).ok());
  EXPECT_THAT(init_from_safetensors(dir + "/partial.safetensors", target.get()).message(),
              HasSubstr("missing tensor 'model.layers.0.input_layernorm.weight'"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dtrn::train
