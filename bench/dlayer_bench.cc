// D-layer forward + backward time against the routed fraction, on the CPU backend (issue: compute must
// scale with the tokens routed). A T block of the same shape is timed beside it as the dense reference.
//
// The routed set is chosen exactly: channel 0 of the input carries +4 for tokens meant for attention
// and -4 for the others, and the router reads only that channel (silu(x0) > 0 iff x0 > 0, so
// p_a > 0.5 iff the token is marked), spread evenly along each sequence.
//
// usage: dlayer_bench [--seq 1024] [--batch 1] [--d-model 256] [--heads 4] [--kv-heads 2] [--reps 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/runtime/ops.h"

using namespace dtrn;
using namespace dtrn::model;

namespace {

int64_t flag(int argc, char** argv, const char* name, int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  }
  return fallback;
}

Tensor weight(const Shape& s, uint64_t stream, double std = 0.02) {
  return Tensor::normal(s, 0, std, 1, stream).set_requires_grad(true);
}

template <typename Fn>
double median_ms(int reps, Fn&& fn) {
  fn();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  ModelConfig c;
  c.d_model = flag(argc, argv, "--d-model", 256);
  c.n_heads = flag(argc, argv, "--heads", 4);
  c.n_kv_heads = flag(argc, argv, "--kv-heads", 2);
  c.d_ff = c.d_model * 8 / 3 / 32 * 32;
  c.n_layers = 3;
  c.seq_len = flag(argc, argv, "--seq", 1024);
  const int64_t B = flag(argc, argv, "--batch", 1), T = c.seq_len, C = c.d_model;
  const int reps = static_cast<int>(flag(argc, argv, "--reps", 5));
  const int64_t hd = c.n_heads * c.head_dim(), kvd = c.n_kv_heads * c.head_dim();

  BlockWeights w;
  w.norm_in = Tensor::full({C}, 1.0).set_requires_grad(true);
  w.norm_post = Tensor::full({C}, 1.0).set_requires_grad(true);
  w.attn = {weight({hd, C}, 1), weight({kvd, C}, 2), weight({kvd, C}, 3), weight({C, hd}, 4)};
  w.mlp = {weight({c.d_ff, C}, 5), weight({c.d_ff, C}, 6), weight({C, c.d_ff}, 7)};
  std::vector<double> w1(C / 2 * C, 0.0), w2(2 * (C / 2), 0.0);
  w1[0] = 1.0;  // hidden unit 0 reads channel 0
  w2[0] = 1.0;  // the attention logit reads hidden unit 0
  w.router = {Tensor::from_vector(w1, {C / 2, C}).set_requires_grad(true), Tensor::zeros({C / 2}).set_requires_grad(true),
              Tensor::from_vector(w2, {2, C / 2}).set_requires_grad(true), Tensor::zeros({2}).set_requires_grad(true)};

  std::printf("D-layer forward+backward on the CPU: B=%lld T=%lld d_model=%lld heads=%lld kv_heads=%lld d_ff=%lld, median of %d\n",
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
              static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads),
              static_cast<long long>(c.d_ff), reps);
  std::printf("| layer | routed fraction r | ms | vs T block |\n| --- | --- | --- | --- |\n");
  Tensor base = Tensor::normal({B, T, C}, 0, 1, 2, 9);
  auto time_block = [&](const Tensor& x, bool routed) {
    return median_ms(reps, [&] {
      Tensor xi = x.detach().clone().set_requires_grad(true);
      Tensor out = routed ? routed_block_forward(c, w, xi, FallbackDraw{}, nullptr) : dense_block_forward(c, w, xi);
      sum(out).backward();
    });
  };
  const double dense_ms = time_block(base, false);
  std::printf("| T | 1.0 (dense) | %.1f | 1.00 |\n", dense_ms);
  for (double r : {0.1, 0.5, 1.0}) {
    std::vector<double> v = base.to_vector();
    const int64_t every = static_cast<int64_t>(1.0 / r + 0.5);
    for (int64_t i = 0; i < B * T; ++i) v[i * C] = (i % T) % every == 0 ? 4.0 : -4.0;
    const double ms = time_block(Tensor::from_vector(v, {B, T, C}), true);
    std::printf("| D | %.1f | %.1f | %.2f |\n", r, ms, ms / dense_ms);
  }
  return 0;
}
