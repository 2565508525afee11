// The whole model against the reference (reference_dtrnet.h) in f64: loss with its routing terms and
// every parameter's gradient; layouts and config validation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "dtrn/model/model.h"
#include "dtrn/runtime/autograd.h"
#include "reference_dtrnet.h"

namespace dtrn::model {
namespace {

using ::testing::HasSubstr;

TEST(Layout, PresetsFollowTheSpec) {
  EXPECT_EQ(resolve_layout("bilayer", 8).value(), "TTDTDTDT");
  EXPECT_EQ(resolve_layout("bilayer", 4).value(), "TTDT");
  EXPECT_EQ(resolve_layout("trilayer", 10).value(), "TTDDTTDDTT");
  EXPECT_EQ(resolve_layout("dense", 3).value(), "TTT");
  EXPECT_EQ(resolve_layout("TDTD", 4).value(), "TDTD");
  EXPECT_THAT(resolve_layout("TDT", 4).status().message(), HasSubstr("3 letters for 4 layers"));
  EXPECT_THAT(resolve_layout("TXTT", 4).status().message(), HasSubstr("only the letters T and D"));
}

TEST(Config, ValidationNamesTheKey) {
  ModelConfig c;
  c.d_model = 96;
  c.n_layers = 4;
  c.n_heads = 7;
  c.n_kv_heads = 7;
  c.d_ff = 128;
  c.seq_len = 64;
  EXPECT_THAT(validate(c).message(), HasSubstr("model.n_heads"));
  c.n_heads = 6;
  c.n_kv_heads = 4;
  EXPECT_THAT(validate(c).message(), HasSubstr("model.n_kv_heads"));
  c.n_kv_heads = 3;
  EXPECT_TRUE(validate(c).ok());
  c.layout = "TTQT";
  EXPECT_THAT(validate(c).message(), HasSubstr("model.layout"));
  RoutingConfig r;
  r.target_fraction = 1.5;
  EXPECT_THAT(validate(r).message(), HasSubstr("routing.target_fraction"));
}

ModelConfig tiny() {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 4;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ff = 12;
  c.vocab_size = 30;  // padded to 64: the padded logits must not count
  c.seq_len = 8;
  c.layout = "TDDT";
  return c;
}

TEST(Model, ParametersCarryHuggingFaceNamesAndDecayFlags) {
  DtrnModel m(tiny(), RoutingConfig{}, Device::cpu(), DType::kF64);
  auto params = m.parameters();
  EXPECT_EQ(params.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(params.front().tensor.shape(), (Shape{64, 8}));
  EXPECT_EQ(params.back().name, "model.norm.weight");
  int routers = 0;
  for (const auto& p : params) {
    if (p.name.find("router") != std::string::npos) ++routers;
    if (p.name.find("bias") != std::string::npos || p.name.find("norm") != std::string::npos) {
      EXPECT_FALSE(p.decay) << p.name;
    }
  }
  EXPECT_EQ(routers, 8);  // two D layers, four tensors each
}

TEST(Model, InitFollowsTheSpecAndIsIndependentOfOrder) {
  DtrnModel a(tiny(), RoutingConfig{}, Device::cpu(), DType::kF64);
  a.init(7);
  for (const auto& p : a.parameters()) {
    std::vector<double> v = p.tensor.to_vector();
    if (p.name.find("norm") != std::string::npos) {
      for (double e : v) EXPECT_EQ(e, 1.0);
    } else if (p.name.find("bias") != std::string::npos) {
      for (double e : v) EXPECT_EQ(e, 0.0);
    }
  }
  // The embedding's sample std is near 0.02 (512 draws: within 15%).
  std::vector<double> e = a.parameters()[0].tensor.to_vector();
  double ss = 0;
  for (double x : e) ss += x * x;
  EXPECT_NEAR(std::sqrt(ss / e.size()), 0.02, 0.003);
  // Same name, same seed: same values, whatever else the model holds. Layer 3's q_proj sits at another
  // index in the two models (a has routers in layers 1 and 2, b has none), and its values are random.
  ModelConfig other = tiny();
  other.layout = "TTTT";
  DtrnModel b(other, RoutingConfig{}, Device::cpu(), DType::kF64);
  b.init(7);
  auto values = [](const DtrnModel& m, const std::string& name, size_t* index) {
    auto params = m.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].name == name) {
        *index = i;
        return params[i].tensor.to_vector();
      }
    }
    ADD_FAILURE() << name;
    return std::vector<double>();
  };
  size_t ia = 0, ib = 0;
  const std::vector<double> qa = values(a, "model.layers.3.self_attn.q_proj.weight", &ia);
  const std::vector<double> qb = values(b, "model.layers.3.self_attn.q_proj.weight", &ib);
  EXPECT_NE(ia, ib);
  EXPECT_EQ(qa, qb);
  EXPECT_NE(qa, values(a, "model.layers.2.self_attn.q_proj.weight", &ia));  // streams differ by name
}

// Gradient accumulation over micro-batches gives the gradient of the whole batch: two halves, each
// loss scaled by 1/2, accumulate into the same leaf buffers as one forward over both rows. CE only
// (lambda = beta = 0): the routing terms are per micro-batch by the spec's definition.
TEST(Model, AccumulatedMicroBatchesEqualOneLargeBatch) {
  RoutingConfig routing;
  routing.sparsity_weight = 0;
  routing.balance_weight = 0;
  DtrnModel m(tiny(), routing, Device::cpu(), DType::kF64);
  m.init(5);
  Tensor ids = Tensor::from_ints({1, 5, 29, 3, 3, 0, 7, 12, 4, 4, 18, 2}, {2, 6});
  Tensor targets = Tensor::from_ints({5, 29, 3, 3, 0, 7, 12, 8, 4, 18, 2, 9}, {2, 6});
  auto params = m.parameters();
  m.forward(ids, targets, ForwardOptions{}).loss.backward();
  std::vector<std::vector<double>> whole;
  for (const auto& p : params) {
    whole.push_back(p.tensor.grad().to_vector());
    p.tensor.zero_grad();
  }
  for (int64_t row = 0; row < 2; ++row) {
    ForwardResult r = m.forward(ids.narrow(0, row, 1).contiguous(), targets.narrow(0, row, 1).contiguous(),
                                ForwardOptions{});
    scale(r.loss, 0.5).backward();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const std::vector<double> acc = params[i].tensor.grad().to_vector();
    ASSERT_EQ(acc.size(), whole[i].size());
    for (size_t k = 0; k < acc.size(); ++k) EXPECT_NEAR(acc[k], whole[i][k], 1e-12) << params[i].name;
  }
}

// A model whose routers send every token to the bypass: in training the fallback routes a seeded 15% in
// each D layer (and reports it), at evaluation nothing is routed and nothing falls back.
TEST(Model, StarvedLayersFallBackInTrainingOnly) {
  DtrnModel m(tiny(), RoutingConfig{}, Device::cpu(), DType::kF64);
  m.init(3);
  for (const auto& p : m.parameters()) {
    if (p.name.find("router.2.bias") != std::string::npos) p.tensor.copy_(Tensor::from_vector({-50, 50}, {2}, DType::kF64));
  }
  Tensor ids = Tensor::from_ints({1, 5, 29, 3, 3, 0, 7, 12, 4, 4, 18, 2}, {2, 6});
  ForwardOptions train;
  train.training = true;
  train.seed = 9;
  ForwardResult r = m.forward(ids, ids, train);
  ASSERT_EQ(r.layers.size(), 2u);
  for (const auto& l : r.layers) {
    EXPECT_TRUE(l.fallback);
    EXPECT_DOUBLE_EQ(l.f, 2.0 / 12.0);  // round(0.15 * 12) = 2 tokens
  }
  ForwardResult e = m.forward(ids, ids, ForwardOptions{});
  for (const auto& l : e.layers) {
    EXPECT_FALSE(l.fallback);
    EXPECT_EQ(l.f, 0.0);
  }
}

TEST(Model, LossAndEveryGradientMatchTheReferenceModel) {
  RoutingConfig routing;
  routing.sparsity_weight = 0.3;  // large, so a wrong routing term would show
  routing.balance_weight = 0.7;
  DtrnModel m(tiny(), routing, Device::cpu(), DType::kF64);
  m.init(11);
  // Routers with larger weights, so the routing decisions are clear of the 0.5 threshold.
  {
    NoGradGuard no_grad;
    for (const auto& p : m.parameters()) {
      if (p.name.find("router") != std::string::npos && p.name.find("weight") != std::string::npos) {
        p.tensor.copy_(Tensor::normal(p.tensor.shape(), 0, 1.0, 3, p.tensor.numel(), 0, DType::kF64));
      }
    }
  }
  Tensor ids = Tensor::from_ints({1, 5, 29, 3, 3, 0, 7, 12, 4, 4, 18, 2}, {2, 6});
  Tensor targets = Tensor::from_ints({5, 29, 3, 3, 0, 7, 12, -100, 4, 18, 2, 9}, {2, 6});

  ForwardResult r = m.forward(ids, targets, ForwardOptions{});
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.targets_counted, 11);

  // The reference, assembled from the parameters by name.
  auto params = m.parameters();
  auto get = [&](const std::string& n) {
    for (const auto& p : params) if (p.name == n) return p.tensor;
    ADD_FAILURE() << n;
    return Tensor();
  };
  auto block = [&](int l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    BlockWeights w;
    w.norm_in = get(p + "input_layernorm.weight");
    w.norm_post = get(p + "post_attention_layernorm.weight");
    w.attn = {get(p + "self_attn.q_proj.weight"), get(p + "self_attn.k_proj.weight"),
              get(p + "self_attn.v_proj.weight"), get(p + "self_attn.o_proj.weight")};
    w.mlp = {get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight"), get(p + "mlp.down_proj.weight")};
    if (l == 1 || l == 2) {
      w.router = {get(p + "router.0.weight"), get(p + "router.0.bias"), get(p + "router.2.weight"),
                  get(p + "router.2.bias")};
    }
    return w;
  };
  const ModelConfig c = tiny();
  auto reference_loss = [&](std::vector<double>* f_out) {
    Tensor x = embedding(get("model.embed_tokens.weight"), ids);
    x = reference::dense_block(c, block(0), x);
    Tensor weighted, f_sum, bal;
    double fs = 0;
    for (int l : {1, 2}) {
      BlockWeights w = block(l);
      std::vector<char> routed = reference::route_by_threshold(w.router, x);
      double f = 0;
      for (char e : routed) f += e;
      f /= routed.size();
      if (f_out) f_out->push_back(f);
      Tensor s = mean(reference::p_attn(w.router, x));
      fs += f;
      weighted = weighted.defined() ? add(weighted, scale(s, f)) : scale(s, f);
      Tensor d = add_scalar(s, -0.1);
      bal = bal.defined() ? add(bal, mul(d, d)) : mul(d, d);
      x = reference::routed_block(c, w, x, routed);
    }
    x = reference::dense_block(c, block(3), x);
    Tensor h = rmsnorm(x, get("model.norm.weight"), c.norm_eps).reshape({12, 8});
    Tensor logits = matmul(h, get("model.embed_tokens.weight"), false, true).narrow(1, 0, 30).contiguous();
    Tensor ce = cross_entropy(logits, targets.reshape({12}), -100);
    return add(add(ce, scale(weighted, 0.3 / fs)), scale(bal, 0.7 / 2));
  };
  std::vector<double> f_ref;
  Tensor ref = reference_loss(&f_ref);
  EXPECT_NEAR(r.loss.item(), ref.item(), 1e-12);
  EXPECT_GT(f_ref[0] + f_ref[1], 0.0);
  EXPECT_DOUBLE_EQ(r.layers[0].f, f_ref[0]);
  EXPECT_DOUBLE_EQ(r.layers[1].f, f_ref[1]);

  r.loss.backward();
  std::vector<Tensor> got;
  for (const auto& p : params) {
    got.push_back(p.tensor.grad());
    p.tensor.zero_grad();
  }
  ref.backward();
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(got[i].defined()) << params[i].name;
    std::vector<double> a = got[i].to_vector(), b = params[i].tensor.grad().to_vector();
    double num = 0, den = 1e-300;
    for (size_t k = 0; k < a.size(); ++k) {
      num = std::max(num, std::abs(a[k] - b[k]));
      den = std::max(den, std::abs(b[k]));
    }
    EXPECT_LT(num / den, 1e-10) << params[i].name;
  }
}

}  // namespace
}  // namespace dtrn::model
