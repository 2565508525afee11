// Tokenizer throughput on a list of text files: dtrn's GPT-2 encoder on one thread and on all
// threads. Prints one JSON line per configuration, in the same shape as tokenizer_bench.mjs (the JS
// reference), so bench/tokenizer.sh can put both in one table. Pass 1 starts with empty piece
// caches ("cold"); the best of the later passes is "warm". The checksum (FNV-1a over all ids) lets
// the script check that both encoders produced the same ids.
//
// usage: tokenizer_bench --files LIST [--tokenizer-dir DIR] [--threads N] [--passes P]
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dtrn/data/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string files, tokenizer_dir;
  int threads = 0, passes = 4;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "tokenizer_bench: %s: cannot read\n", path.c_str());
    std::exit(1);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint32_t fnv1a(const std::vector<std::vector<uint32_t>>& ids) {
  uint32_t h = 2166136261u;
  for (const auto& doc : ids) {
    for (uint32_t id : doc) h = (h ^ id) * 16777619u;
  }
  return h;
}

// Encodes all documents `passes` times on `threads` threads that live across passes (so their piece
// caches stay warm); returns the seconds of each pass.
std::vector<double> run(const dtrn::data::Tokenizer& tok, const std::vector<std::string>& docs,
                        int threads, int passes, std::vector<std::vector<uint32_t>>* ids) {
  ids->assign(docs.size(), {});
  std::vector<double> seconds;
  std::atomic<size_t> next{0};
  Clock::time_point start;
  std::barrier sync(threads + 1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int p = 0; p < passes; ++p) {
        sync.arrive_and_wait();  // pass starts
        for (size_t i; (i = next.fetch_add(1)) < docs.size();) {
          (*ids)[i].clear();
          tok.encode(docs[i], &(*ids)[i]);
        }
        sync.arrive_and_wait();  // pass ends
      }
    });
  }
  for (int p = 0; p < passes; ++p) {
    next = 0;
    start = Clock::now();
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  for (auto& th : pool) th.join();
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "tokenizer_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--files")
      o.files = value();
    else if (a == "--tokenizer-dir")
      o.tokenizer_dir = value();
    else if (a == "--threads")
      o.threads = std::atoi(value().c_str());
    else if (a == "--passes")
      o.passes = std::atoi(value().c_str());
    else {
      std::fprintf(
          stderr,
          "usage: tokenizer_bench --files LIST [--tokenizer-dir DIR] [--threads N] [--passes P]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if (o.files.empty()) {
    std::fprintf(stderr, "tokenizer_bench: --files LIST is required (one path per line)\n");
    return 2;
  }
  if (o.tokenizer_dir.empty()) o.tokenizer_dir = dtrn::data::default_tokenizer_dir();
  if (o.threads <= 0) o.threads = int(std::thread::hardware_concurrency());
  if (o.passes < 2) o.passes = 2;

  auto tok = dtrn::data::Tokenizer::Load(o.tokenizer_dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", tok.status().message().c_str());
    return 1;
  }
  std::vector<std::string> docs;
  std::istringstream list(slurp(o.files));
  size_t bytes = 0;
  for (std::string path; std::getline(list, path);) {
    if (path.empty()) continue;
    docs.push_back(slurp(path));
    bytes += docs.back().size();
  }

  std::vector<int> configs = {1};
  if (o.threads > 1) configs.push_back(o.threads);
  for (int threads : configs) {
    std::vector<std::vector<uint32_t>> ids;
    std::vector<double> s = run(*tok, docs, threads, o.passes, &ids);
    double warm = s[1];
    for (size_t p = 2; p < s.size(); ++p) warm = std::min(warm, s[p]);
    size_t tokens = 0;
    for (const auto& d : ids) tokens += d.size();
    std::printf(
        "{\"impl\":\"dtrn\",\"threads\":%d,\"bytes\":%zu,\"tokens\":%zu,\"checksum\":%u,"
        "\"cold_mb_s\":%.2f,\"warm_mb_s\":%.2f}\n",
        threads, bytes, tokens, fnv1a(ids), bytes / 1e6 / s[0], bytes / 1e6 / warm);
  }
  return 0;
}
