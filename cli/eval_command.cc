// `dtrn eval`: CE loss, perplexity, bits per byte and per-layer routing of a checkpoint on a data split
// or a text file, as one JSON object on stdout (definition in train/evaluate.h).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "dtrn/data/dataset.h"
#include "dtrn/data/tokenizer.h"
#include "dtrn/runtime/file_io.h"
#include "dtrn/train/checkpoint.h"
#include "dtrn/train/evaluate.h"
#include "dtrn/train/job_config.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] =
    "usage: dtrn eval --checkpoint DIR (--data DIR [--split val] | --text FILE) [--batches N]\n"
    "                 [--batch-size B] [--device cpu|cuda] [--tokenizer-dir DIR]\n";

constexpr char kHelp[] =
    "\nScores consecutive windows of the tokens in order: window k feeds tokens [kT, kT+T) and predicts\n"
    "[kT+1, kT+T], T = model.seq_len, until the tokens run out; every token is predicted once.\n\n"
    "  --checkpoint DIR   a checkpoint folder, or a run directory (its newest checkpoint)\n"
    "  --data DIR         a `dtrn prep` folder; --split picks train or val (default val)\n"
    "  --text FILE        a text file, tokenized exactly as `dtrn tokenize` does, nothing added\n"
    "  --batches N        stop after N batches (default: all)\n"
    "  --batch-size B     windows per forward (default: the run's train.micro_batch)\n"
    "Prints {loss, ppl, bits_per_byte, tokens, layers: [{layer, f, s, fallback, starved}]}; loss is CE\n"
    "only; starved: f below the run's routing.starvation_threshold (the layer sends almost no token to\n"
    "attention), as the trainer's step line marks it. A run longer than a few seconds reports its progress\n"
    "on stderr. A corrupt newest checkpoint of a run directory is skipped with a warning on stderr.\n"
    "Refuses --batches or --batch-size below 1, and data whose token ids the model cannot take.\n";

// One progress line on stderr at most every kProgressSeconds, so short evaluations stay quiet.
constexpr double kProgressSeconds = 5.0;

}  // namespace

StatusOr<std::string> resolve_checkpoint_warning(const std::string& command, const std::string& path) {
  std::vector<std::string> skipped;
  auto ckpt = train::resolve_checkpoint(path, &skipped);
  for (const std::string& line : skipped) std::cerr << "dtrn " << command << ": " << line << "\n";
  return ckpt;
}

int run_eval(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2,
                          {{"checkpoint"}, {"data"}, {"split"}, {"text"}, {"batches"}, {"batch-size"},
                           {"device"}, {"tokenizer-dir"}, {"help", false}});
  if (!args.ok()) return usage_error("eval", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->has("checkpoint")) return usage_error("eval", "--checkpoint is required");
  if (args->has("data") == args->has("text")) return usage_error("eval", "give exactly one of --data and --text");
  auto batches = args->get_int("batches", 0);
  if (!batches.ok()) return fail("eval", batches.status().message());
  if (args->has("batches") && *batches <= 0) {
    return fail("eval", "--batches must be at least 1 (leave it out to evaluate every window)");
  }

  auto ckpt = resolve_checkpoint_warning("eval", *args->get("checkpoint"));
  if (!ckpt.ok()) return fail("eval", ckpt.status().message());
  auto yaml = train::read_checkpoint_config(*ckpt);
  if (!yaml.ok()) return fail("eval", yaml.status().message());
  auto config = train::parse_job_config(*yaml);
  if (!config.ok()) return fail("eval", *ckpt + ": stored config: " + config.status().message());
  auto batch_size = args->get_int("batch-size", config->train.micro_batch);
  if (!batch_size.ok() || *batch_size <= 0) return fail("eval", "--batch-size must be a positive integer");
  const Device device = Device::parse(args->get_or("device", "cpu"));

  std::vector<int32_t> tokens;
  double bytes_per_token = 0;
  int64_t vocab = 0;  // token ids of the data are below this
  if (args->has("data")) {
    const std::string split = args->get_or("split", "val");
    if (split != "val" && split != "train") return fail("eval", "--split must be val or train, got '" + split + "'");
    auto ds = data::TokenDataset::Open(*args->get("data"), split);
    if (!ds.ok()) return fail("eval", ds.status().message());
    tokens = (*ds)->all_tokens();
    vocab = (*ds)->meta().vocab_size;
    if (const auto* s = (*ds)->meta().split(split)) bytes_per_token = s->bytes_per_token();
  } else {
    auto read = read_file(*args->get("text"));
    if (!read.ok()) return fail("eval", read.status().message());
    const std::string& text = *read;
    auto tok = load_tokenizer(*args);
    if (!tok.ok()) return fail("eval", tok.status().message());
    std::vector<uint32_t> ids;
    tok->encode(text, &ids);
    tokens.assign(ids.begin(), ids.end());
    vocab = tok->vocab_size();
    if (!ids.empty()) bytes_per_token = static_cast<double>(text.size()) / static_cast<double>(ids.size());
  }
  if (tokens.size() < 2) return fail("eval", "fewer than two tokens to evaluate");
  if (vocab > config->model.vocab_size) {
    return fail("eval", "the data's token ids go up to " + std::to_string(vocab - 1) + ", the model's model.vocab_size is " +
                            std::to_string(config->model.vocab_size));
  }

  model::DtrnModel model(config->model, config->routing, device, DType::kF32);
  Status st = train::load_checkpoint(*ckpt, &model, nullptr, nullptr);
  if (!st.ok()) return fail("eval", st.message());
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  auto progress = [&](int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done == total || std::chrono::duration<double>(now - last).count() < kProgressSeconds) return;
    last = now;
    const double elapsed = std::chrono::duration<double>(now - start).count();
    std::fprintf(stderr, "dtrn eval: batch %lld/%lld (%.0f%%), %.0fs, about %.0fs left\n",
                 static_cast<long long>(done), static_cast<long long>(total), 100.0 * done / total, elapsed,
                 elapsed / done * (total - done));
  };
  train::EvalResult r = train::evaluate_tokens(model, tokens, *batch_size, *batches, bytes_per_token, progress);
  nlohmann::json out = {{"checkpoint", *ckpt}, {"loss", r.loss}, {"ppl", r.ppl},
                        {"bits_per_byte", r.bits_per_byte}, {"tokens", r.tokens}};
  out["layers"] = nlohmann::json::array();
  for (const auto& l : r.layers) {
    out["layers"].push_back({{"layer", l.layer}, {"f", l.f}, {"s", l.s}, {"fallback", l.fallback},
                             {"starved", l.fallback || l.f < config->routing.starvation_threshold}});
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace dtrn::cli
