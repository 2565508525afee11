// `dtrn train`, `eval` and `export` under a new user's mistakes and a cluster's pre-emption signals, run as
// a user runs them: the built binary, its exit status, stderr, and the files it leaves. Each refusal must
// leave every file of the run as it was, byte for byte; a run stopped by SIGTERM must resume to exactly
// the metrics of a run never stopped.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "dtrn/data/prep.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/check.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/safetensors.h"

extern char** environ;

namespace dtrn::train {
namespace {
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// The one shard of a one-process checkpoint.
std::string shard_name(const std::string& checkpoint) {
  for (const auto& e : fs::directory_iterator(checkpoint)) {
    if (e.path().extension() == ".safetensors") return e.path().filename();
  }
  return "";
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every file under `dir` (relative path -> bytes), except the lock file, whose text is the pid of the last
// process that held it.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (rel == ".lock") continue;
    files[rel] = e.is_regular_file() ? slurp(e.path()) : "<folder>";
  }
  return files;
}

// The lines of metrics.jsonl without their timing fields, the only ones allowed to differ between runs.
std::vector<nlohmann::json> metrics(const fs::path& run) {
  std::ifstream in(run / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "checkpoint") continue;  // records of saves, which differ between runs by design
    j.erase("tokens_per_s");
    j.erase("step_ms");
    out.push_back(j);
  }
  return out;
}

struct Result {
  int code = -1;    // exit status, or -1 when killed by a signal
  int signal = 0;   // the signal that killed it
  std::string out, err;
};

// A tiny bilayer model on a small dataset (Blake's poems to train, Buster Brown to validate), so that a
// step takes a fraction of a second even on CI's two shared cores.
class RunSafetyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/dtrn-run-safety-XXXXXX";
    root_ = mkdtemp(tmpl);
    const std::string corpus = std::string(DTRN_SOURCE_DIR) + "/.assets/corpus/gutenberg/";
    auto tok = data::Tokenizer::Load(std::string(DTRN_SOURCE_DIR) + "/.assets/tokenizer");
    ASSERT_TRUE(tok.ok()) << tok.status().message() << " (run `make assets`)";
    data::PrepOptions po;
    po.inputs = {corpus + "blake-poems.txt", corpus + "burgess-busterbrown.txt"};
    po.out_dir = root_ + "/data";
    po.val_patterns = {"burgess-busterbrown"};
    ASSERT_TRUE(data::prepare_dataset(*tok, po).ok());
    std::ofstream(root_ + "/job.yaml")
        << "model: {d_model: 16, n_layers: 2, n_heads: 2, n_kv_heads: 1, d_ff: 32, seq_len: 16, layout: TD}\n"
           "train: {steps: 4, micro_batch: 1, global_batch: 2, lr: 3e-3, min_lr: 3e-4, warmup_steps: 1,\n"
           "        seed: 3, device: cpu, eval_every: 2, eval_batches: 1}\n"
           "data: {path: " + root_ + "/data}\n"
           "checkpoint: {every: 1, keep: 0}\n";
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  void SetUp() override {
    dir_ = fs::path(root_) / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }

  static std::string job() { return root_ + "/job.yaml"; }
  std::string run(const std::string& name) const { return (dir_ / name).string(); }

  // Starts `dtrn <args>` with stdout and stderr going to files in the test's folder; returns its pid.
  pid_t start(const std::vector<std::string>& args, const std::string& tag = "cmd") {
    out_ = dir_ / (tag + ".out");
    err_ = dir_ / (tag + ".err");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv_s = {DTRN_BINARY};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, DTRN_BINARY, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    return pid;
  }

  Result finish(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    Result r;
    if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    r.out = slurp(out_);
    r.err = slurp(err_);
    return r;
  }

  Result dtrn(const std::vector<std::string>& args) { return finish(start(args)); }

  // Trains `name` from scratch with job.yaml and `sets`; asserts success.
  void train(const std::string& name, const std::vector<std::string>& sets = {}) {
    std::vector<std::string> args = {"train", "--config", job(), "--run-dir", run(name), "--quiet"};
    for (const auto& s : sets) args.insert(args.end(), {"--set", s});
    Result r = dtrn(args);
    ASSERT_EQ(r.code, 0) << r.err;
  }

  // Waits until `path` holds at least `lines` lines (or `text`), up to a minute.
  static bool wait_for(const fs::path& path, size_t lines, const std::string& text = "") {
    for (int i = 0; i < 60000; ++i) {
      const std::string s = slurp(path);
      if (text.empty() ? static_cast<size_t>(std::count(s.begin(), s.end(), '\n')) >= lines
                       : s.find(text) != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  static void flip_byte(const fs::path& file, size_t offset) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(offset));
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5A);
    f.seekp(std::streamoff(offset));
    f.write(&c, 1);
  }

  static std::string root_;
  fs::path dir_, out_, err_;
};
std::string RunSafetyTest::root_;

// Item 1: any existing run state is refused without --resume, and nothing in it changes.
TEST_F(RunSafetyTest, AFreshRunRefusesAnyExistingRunStateAndTouchesNothing) {
  train("corrupt", {"train.steps=2"});
  // Both checkpoints corrupt: before, a fresh run deleted them and truncated metrics.jsonl.
  flip_byte(run("corrupt") + "/checkpoints/step-00000001/" + shard_name(run("corrupt") + "/checkpoints/step-00000001"), 200);
  flip_byte(run("corrupt") + "/checkpoints/step-00000002/" + shard_name(run("corrupt") + "/checkpoints/step-00000002"), 200);
  const auto before = snapshot(run("corrupt"));
  Result r = dtrn({"train", "--config", job(), "--run-dir", run("corrupt"), "--quiet"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("dtrn train: " + run("corrupt") + " already holds "));
  EXPECT_THAT(r.err, HasSubstr("pass --resume"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(snapshot(run("corrupt")), before);

  // A folder with only a metrics.jsonl is someone's state too.
  fs::create_directories(run("metrics-only"));
  std::ofstream(run("metrics-only") + "/metrics.jsonl") << "{\"step\": 1}\n";
  r = dtrn({"train", "--config", job(), "--run-dir", run("metrics-only"), "--quiet"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("already holds metrics.jsonl"));
  EXPECT_EQ(slurp(run("metrics-only") + "/metrics.jsonl"), "{\"step\": 1}\n");
  EXPECT_FALSE(fs::exists(run("metrics-only") + "/.lock"));  // not even a lock file added

  // An empty folder is fine.
  fs::create_directories(run("empty"));
  train("empty", {"train.steps=1", "train.eval_every=0"});
}

// Items 1 and 2: a resume that would change what the checkpoint means is refused naming the key, and
// leaves config.yaml, metrics.jsonl and the checkpoints as they were.
TEST_F(RunSafetyTest, AResumeThatChangesTheMeaningIsRefusedNamingTheKeyAndChangesNothing) {
  train("base", {"train.steps=2"});
  const auto before = snapshot(run("base"));
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"model.d_model=32", "model.d_model is 16 in the checkpoint and 32 now"},
      {"model.seq_len=8", "model.seq_len is 16 in the checkpoint and 8 now"},
      {"train.seed=4", "train.seed is 3 in the checkpoint and 4 now"},
      {"train.global_batch=4", "train.global_batch is 2 in the checkpoint and 4 now"},
      {"data.path=" + root_ + "/other", "data.path is " + root_ + "/data in the checkpoint and " + root_ +
                                            "/other now"}};
  for (const auto& [set, message] : refused) {
    Result r = dtrn({"train", "--run-dir", run("base"), "--resume", "--quiet", "--set", set});
    EXPECT_EQ(r.code, 1) << set;
    EXPECT_EQ(r.err.rfind("dtrn train: --resume: " + message, 0), 0u) << r.err;
    EXPECT_THAT(r.err, HasSubstr("changes what the checkpoint means"));
    EXPECT_EQ(snapshot(run("base")), before) << set;
  }
  // --resume with --init-from: one of the two, said in one line.
  Result r = dtrn({"train", "--run-dir", run("base"), "--resume", "--init-from", run("x.safetensors")});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--resume continues the run's checkpoint and --init-from starts a new run"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(snapshot(run("base")), before);

  // Nothing left to do: said, and nothing written.
  r = dtrn({"train", "--run-dir", run("base"), "--resume"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("nothing to do: " + run("base") + "/checkpoints/step-00000002 is at step 2 of "
                               "train.steps 2"));
  EXPECT_EQ(snapshot(run("base")), before);

  // Steps may change (without --config: the run's own config.yaml); the change and the recomputed
  // schedule are logged.
  r = dtrn({"train", "--run-dir", run("base"), "--resume", "--quiet", "--set", "train.steps=3"});
  EXPECT_EQ(r.code, 0) << r.err;
  const std::string log = slurp(run("base") + "/train.log");
  EXPECT_THAT(log, HasSubstr("train.steps: 2 -> 3; the warm-up + cosine schedule is recomputed to end at step 3"));
  EXPECT_EQ(metrics(run("base")).back()["step"], 3);
}

// Item 2: a corrupt newest checkpoint is skipped with a word on stderr by --resume, eval and export.
TEST_F(RunSafetyTest, ACorruptNewestCheckpointIsSkippedWithAWarningNamingIt) {
  train("skip", {"train.steps=2", "train.eval_every=0"});
  const std::string newest = run("skip") + "/checkpoints/step-00000002";
  const std::string shard = newest + "/" + shard_name(newest);
  flip_byte(shard, fs::file_size(shard) - 3);  // in the data: the message names the tensor
  const std::string warning = "skipped " + newest + ", which fails verification: " + shard + ": tensor '";
  Result r = dtrn({"eval", "--checkpoint", run("skip"), "--data", root_ + "/data", "--batches", "1"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("dtrn eval: " + warning));
  EXPECT_EQ(nlohmann::json::parse(r.out)["checkpoint"], run("skip") + "/checkpoints/step-00000001");
  r = dtrn({"export", "--checkpoint", run("skip"), "--out", run("skip.safetensors")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("dtrn export: " + warning));
  r = dtrn({"train", "--run-dir", run("skip"), "--resume", "--quiet"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("dtrn train: --resume: " + warning));
  EXPECT_THAT(slurp(run("skip") + "/train.log"), HasSubstr("resumed from " + run("skip") +
                                                           "/checkpoints/step-00000001 at step 1"));
}

// Item 1: export never overwrites a file without --force and never writes inside a checkpoint.
TEST_F(RunSafetyTest, ExportRefusesAnExistingFileAndAnyPathInsideACheckpoint) {
  train("export", {"train.steps=1", "train.eval_every=0"});
  const std::string ckpt = run("export") + "/checkpoints/step-00000001";
  const auto before = snapshot(run("export"));
  std::ofstream(run("taken.safetensors")) << "precious";
  Result r = dtrn({"export", "--checkpoint", run("export"), "--out", run("taken.safetensors")});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dtrn export: " + run("taken.safetensors") + ": exists; pass --force to replace it\n");
  EXPECT_EQ(slurp(run("taken.safetensors")), "precious");
  for (const char* force : {"", "--force"}) {
    std::vector<std::string> args = {"export", "--checkpoint", ckpt, "--out", ckpt + "/model.safetensors"};
    if (*force) args.push_back(force);
    r = dtrn(args);
    EXPECT_EQ(r.code, 1);
    EXPECT_THAT(r.err, HasSubstr("inside the checkpoint " + ckpt));
    r = dtrn({"export", "--checkpoint", ckpt, "--out", ckpt + "/new.safetensors", "--force"});
    EXPECT_EQ(r.code, 1);
  }
  EXPECT_EQ(snapshot(run("export")), before);
  r = dtrn({"export", "--checkpoint", run("export"), "--out", run("taken.safetensors"), "--force"});
  EXPECT_EQ(r.code, 0) << r.err;
  // The model's tensors of the checkpoint's shard, byte for byte; no optimizer moments.
  auto exported = read_safetensors(run("taken.safetensors"));
  auto saved = read_safetensors(ckpt + "/" + shard_name(ckpt));
  ASSERT_TRUE(exported.ok() && saved.ok());
  EXPECT_EQ(exported->tensors.size() * 3, saved->tensors.size());
  for (const auto& [name, t] : exported->tensors) {
    ASSERT_NE(saved->find(name), nullptr) << name;
    EXPECT_EQ(t.to_vector(), saved->find(name)->to_vector()) << name;
  }
  // A folder that does not exist is named as the user wrote it, never as a temporary file.
  r = dtrn({"export", "--checkpoint", ckpt, "--out", run("no/such/dir/x.safetensors")});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(run("no/such/dir/x.safetensors") + ": the folder"));
  EXPECT_THAT(r.err, Not(HasSubstr(".tmp-")));
}

// Item 3: SIGTERM finishes the step, saves a checkpoint, says where, exits 75; the resumed run's
// metrics equal an uninterrupted run's.
TEST_F(RunSafetyTest, SigtermSavesACheckpointAndTheResumedRunIsExact) {
  // 24 steps: the signal, sent when the first step's line appears, lands long before the last one even
  // when CI's cores are busy.
  const std::vector<std::string> sets = {"--set", "train.steps=24", "--set", "checkpoint.every=0",
                                         "--set", "train.eval_every=8"};
  std::vector<std::string> args = {"train", "--config", job(), "--run-dir", run("full"), "--quiet"};
  args.insert(args.end(), sets.begin(), sets.end());
  ASSERT_EQ(dtrn(args).code, 0);

  args[4] = run("stopped");
  const pid_t pid = start(args);
  ASSERT_TRUE(wait_for(run("stopped") + "/metrics.jsonl", 1));
  kill(pid, SIGTERM);
  Result r = finish(pid);
  ASSERT_EQ(r.code, 75) << r.err;
  const std::vector<nlohmann::json> partial = metrics(run("stopped"));
  const int64_t step = partial.back()["step"];
  ASSERT_LT(step, 24) << "the run ended before the signal arrived";
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  const std::string ckpt = run("stopped") + "/checkpoints/" + name;
  EXPECT_THAT(r.err, HasSubstr("dtrn train: SIGTERM: finishing this step, then saving a checkpoint"));
  EXPECT_THAT(r.err, HasSubstr("dtrn train: stopped by SIGTERM after step " + std::to_string(step) +
                               "; checkpoint " + ckpt + "; continue with: dtrn train --run-dir " +
                               run("stopped") + " --resume"));
  EXPECT_TRUE(verify_checkpoint(ckpt).ok());

  r = dtrn({"train", "--run-dir", run("stopped"), "--resume", "--quiet"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(metrics(run("stopped")), metrics(run("full")));
}

// Items 3 and 6: a second signal stops at once; while a trainer runs, a second one cannot share its
// folder.
TEST_F(RunSafetyTest, ASecondSignalStopsAtOnceAndALockKeepsASecondTrainerOut) {
  // Larger steps (seconds on CI), so that the second signal lands inside one.
  const pid_t pid = start({"train", "--config", job(), "--run-dir", run("busy"), "--quiet", "--set",
                           "train.steps=1000", "--set", "model.seq_len=128", "--set", "train.micro_batch=8",
                           "--set", "train.global_batch=8", "--set", "checkpoint.every=0"},
                          "busy");
  ASSERT_TRUE(wait_for(run("busy") + "/metrics.jsonl", 1));
  const fs::path busy_err = err_;
  Result second = dtrn({"train", "--run-dir", run("busy"), "--resume"});
  EXPECT_EQ(second.code, 1);
  EXPECT_THAT(second.err, HasSubstr(run("busy") + " is in use by another dtrn train (pid " + std::to_string(pid) +
                                    "): two trainers cannot share one run directory"));
  out_ = dir_ / "busy.out";
  err_ = busy_err;
  kill(pid, SIGTERM);
  ASSERT_TRUE(wait_for(busy_err, 0, "SIGTERM: finishing this step"));
  kill(pid, SIGTERM);
  Result r = finish(pid);
  EXPECT_EQ(r.signal, SIGTERM) << "exit " << r.code << ": " << r.err;
  EXPECT_FALSE(fs::exists(run("busy") + "/checkpoints"));
}

// Item 6: a failed start leaves no run directory; an error after the start is in train.log too.
TEST_F(RunSafetyTest, AFailedStartLeavesNoFolderAndLaterErrorsReachTrainLog) {
  Result r = dtrn({"train", "--config", job(), "--run-dir", run("never"), "--set", "data.path=/nonexistent"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/meta.json"));
  EXPECT_FALSE(fs::exists(run("never")));
  r = dtrn({"train", "--config", job(), "--run-dir", run("never"), "--resume"});
  EXPECT_EQ(r.code, 1);
  EXPECT_FALSE(fs::exists(run("never")));

  train("later", {"train.steps=1", "train.eval_every=0"});
  fs::remove(run("later") + "/metrics.jsonl");
  fs::create_directories(run("later") + "/metrics.jsonl");  // unreadable as a file: fails after the start
  r = dtrn({"train", "--run-dir", run("later"), "--resume", "--quiet", "--set", "train.steps=2"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("metrics.jsonl"));
  const std::string log = slurp(run("later") + "/train.log");
  EXPECT_THAT(log, HasSubstr(" error: " + r.err.substr(std::string("dtrn train: ").size())));
}

// Item 6: what a torchrun / llm.c user looks for on the step line, in train.log and at the end.
TEST_F(RunSafetyTest, StepLinesCarryTimingAndTheRunEndsWithASummary) {
  Result r = dtrn({"train", "--config", job(), "--run-dir", run("chatty")});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::ContainsRegex("step 1/4 \\| .* tok/s \\| [0-9.]+ ms \\| elapsed [0-9.:s]+ \\| "
                                              "eta [0-9.:s]+ \\| f: L1 "));
  EXPECT_THAT(r.out, ::testing::ContainsRegex("done: 4 steps \\(4 in this process\\), 128 tokens, [0-9.:s]+; "
                                              "validation loss [0-9.]+ at step 4, best [0-9.]+ at step [24]; "
                                              "checkpoints in " + run("chatty") + "/checkpoints"));
  // Every line of train.log starts with its UTC time.
  std::istringstream log(slurp(run("chatty") + "/train.log"));
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) {
    EXPECT_THAT(line, ::testing::MatchesRegex("20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z .*"));
    ++lines;
  }
  EXPECT_GT(lines, 4);
  // eval marks a layer below the starvation threshold as starved instead of a plain small f.
  r = dtrn({"eval", "--checkpoint", run("chatty"), "--data", root_ + "/data", "--batches", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto layer = nlohmann::json::parse(r.out)["layers"][0];
  EXPECT_EQ(layer["starved"].get<bool>(), layer["f"].get<double>() < 0.01);
  EXPECT_FALSE(layer["fallback"].get<bool>());  // inference never falls back (rule 4)
}

// Items 5 and 6: one-line usage errors, refused values, version and help.
TEST_F(RunSafetyTest, UsageErrorsAreOneLineAndObviouslyWrongValuesAreRefused) {
  Result r = dtrn({"train"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "dtrn train: --config is required (dtrn train --help shows the usage)\n");
  r = dtrn({"export", "--checkpoint", "x"});
  EXPECT_EQ(r.err, "dtrn export: --checkpoint and --out are required (dtrn export --help shows the usage)\n");
  r = dtrn({"eval", "--checkpoint", "x", "--text", "y", "--batches", "0"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "dtrn eval: --batches must be at least 1 (leave it out to evaluate every window)\n");
  r = dtrn({"train", "--config", job(), "--run-dir", run("w"), "--set", "train.warmup_steps=9"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("train.warmup_steps: 9 is more than train.steps 4"));
  EXPECT_FALSE(fs::exists(run("w")));

  r = dtrn({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, ::testing::MatchesRegex("dtrn [0-9]+\\.[0-9]+\\.[0-9]+ \\(cuda backend: (built|not built)\\)\n"));
  r = dtrn({"help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("commands:"));
  r = dtrn({"help", "train"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("Exit status: 0 done, 1 error, 2 usage error, 75 stopped by a signal"));
}

// Item 5 (c10's two-macro rule): a user's error carries no source location; an internal one names the
// repository path, never the build machine's folders.
TEST(CheckMessages, UserErrorsCarryNoSourcePathInternalOnesARepositoryPath) {
  try {
    DTRN_CHECK(1 + 1 == 3, "the argument is wrong");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "the argument is wrong");
  }
  try {
    DTRN_CHECK_EQ(2, 3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "check failed: 2 == 3 (2 vs 3)");
  }
  try {
    DTRN_ASSERT(1 + 1 == 3, "broken");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::StartsWith("internal error: broken [tests/train/run_safety_test.cc:"));
    EXPECT_THAT(e.what(), Not(HasSubstr(DTRN_SOURCE_DIR)));
  }
}

}  // namespace
// `dtrn ckpt`: list shows every step folder with its state, verify names the corrupt file and tensor
// (exit status 1), inspect prints the counters and slices; --auto-resume starts afresh, then resumes.
TEST_F(RunSafetyTest, CkptListVerifyInspectAndAutoResume) {
  Result r = dtrn({"train", "--config", job(), "--run-dir", run("auto"), "--auto-resume", "--quiet", "--set",
                   "train.steps=2", "--set", "train.eval_every=0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string ckpts = run("auto") + "/checkpoints";
  r = dtrn({"ckpt", "verify", run("auto")});
  EXPECT_EQ(r.code, 0) << r.err;
  r = dtrn({"ckpt", "inspect", run("auto")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("step 2, tokens "));
  EXPECT_THAT(r.out, HasSubstr("layout dp 1, tp 1, zero 0"));
  EXPECT_THAT(r.out, HasSubstr("model.norm.weight.exp_avg [16] at [0] of [16]"));

  const std::string shard = ckpts + "/step-00000002/" + shard_name(ckpts + "/step-00000002");
  flip_byte(shard, fs::file_size(shard) - 3);
  fs::create_directories(ckpts + "/step-00000003");  // an uncommitted save
  r = dtrn({"ckpt", "list", run("auto")});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(ckpts + "/step-00000003  uncommitted"));
  EXPECT_THAT(r.out, HasSubstr(ckpts + "/step-00000001  ok"));
  r = dtrn({"ckpt", "verify", run("auto")});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.out, HasSubstr(ckpts + "/step-00000002  " + shard + ": tensor 'model.norm.weight"));
  r = dtrn({"ckpt", "verify", ckpts + "/step-00000002"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("dtrn ckpt: " + shard + ": tensor '"));

  // Resumed from step 1 (step 2 is corrupt); the uncommitted folder is cleaned and logged.
  r = dtrn({"train", "--config", job(), "--run-dir", run("auto"), "--auto-resume", "--quiet", "--set",
            "train.steps=3", "--set", "train.eval_every=0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string log = slurp(run("auto") + "/train.log");
  EXPECT_THAT(log, HasSubstr("resumed from " + ckpts + "/step-00000001 at step 1"));
  EXPECT_THAT(log, HasSubstr("removed " + ckpts + "/step-00000003 (an uncommitted save: no manifest)"));
  EXPECT_EQ(metrics(run("auto")).back()["step"], 3);
}

}  // namespace dtrn::train
