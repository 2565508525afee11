// How many gradient sums the autograd engine performs in one block's backward. Every output of a node
// that several consumers read gets one gradient from each, and the engine adds them (one element-wise add
// kernel per extra consumer, autograd.cc). The blocks avoid the [N, C] ones: linears() sums its input's
// gradient inside its products, and rmsnorm_keep / add_rmsnorm add their passthrough's gradient inside
// the norm's backward kernel. The count walks the recorded graph (edges per producer output), so it is
// exactly what the engine will add, independent of any kernel timing.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <unordered_set>
#include <vector>

#include "dtrn/model/blocks.h"
#include "dtrn/runtime/autograd.h"
#include "dtrn/runtime/ops.h"
#include "tiny_config.h"

namespace dtrn::model {
namespace {

Tensor leaf(const Shape& s, uint64_t stream, double lo = -1.0, double hi = 1.0) {
  return Tensor::uniform(s, lo, hi, 7, stream, 0, DType::kF64).set_requires_grad(true);
}

BlockWeights random_block(const ModelConfig& c) {
  const int64_t C = c.d_model, hd = c.n_heads * c.head_dim(), kvd = c.n_kv_heads * c.head_dim();
  BlockWeights w;
  w.norm_in = leaf({C}, 1, 0.5, 1.5);
  w.norm_post = leaf({C}, 2, 0.5, 1.5);
  w.attn = {leaf({hd, C}, 3), leaf({kvd, C}, 4), leaf({kvd, C}, 5), leaf({C, hd}, 6)};
  w.mlp = {leaf({c.d_ff, C}, 7), leaf({c.d_ff, C}, 8), leaf({C, c.d_ff}, 9)};
  w.router = {leaf({C / 2, C}, 10), leaf({C / 2}, 11), leaf({2, C / 2}, 12), leaf({2}, 13)};
  return w;
}

// For every node output with k > 1 consumers in the graph behind `root`: "name#output" -> k - 1, the
// adds the engine performs to sum that output's gradient.
std::map<std::string, int> gradient_sums(const Tensor& root) {
  std::map<const Node*, std::map<uint32_t, int>> consumers;
  std::unordered_set<const Node*> seen = {root.grad_fn().get()};
  std::vector<const Node*> stack = {root.grad_fn().get()};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->edges()) {
      if (!e.node) continue;
      ++consumers[e.node.get()][e.output];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }
  std::map<std::string, int> sums;
  for (const auto& [node, outputs] : consumers) {
    for (const auto& [output, count] : outputs) {
      if (count > 1) sums[node->name() + "#" + std::to_string(output)] += count - 1;
    }
  }
  return sums;
}

std::string describe(const std::map<std::string, int>& sums) {
  std::string s;
  for (const auto& [name, adds] : sums) s += name + " x" + std::to_string(adds) + "; ";
  return s;
}

TEST(BlockGradientSums, DenseBlockSumsNone) {
  const ModelConfig c = tiny_block_config(2);
  const BlockWeights w = random_block(c);
  const Tensor x = mul(leaf({2, 5, c.d_model}, 20), leaf({2, 5, c.d_model}, 21));  // an interior input
  const std::map<std::string, int> sums = gradient_sums(dense_block_forward(c, w, x));
  EXPECT_TRUE(sums.empty()) << describe(sums);
}

TEST(BlockGradientSums, RoutedBlockSumsOnlyTheRouterAndTheRoutedRows) {
  const ModelConfig c = tiny_block_config(2);
  const BlockWeights w = random_block(c);
  const Tensor x = mul(leaf({2, 5, c.d_model}, 20), leaf({2, 5, c.d_model}, 21));
  RoutingStats stats;
  const Tensor out = routed_block_forward(c, w, x, FallbackDraw{}, &stats);
  ASSERT_GT(stats.routed, 0) << "the fixture must route some tokens";
  // What stays: x's passthrough feeds the router and the residual ([N, C]); u feeds W_V and the routed
  // rows' gather ([N, C]); the router's logits z [N, 2] feed the probability and Delta (small).
  const std::map<std::string, int> want = {{"matmul#0", 1}, {"reshape#0", 1}, {"rmsnorm_keep#0", 1}};
  const std::map<std::string, int> sums = gradient_sums(out);
  EXPECT_EQ(sums, want) << describe(sums);
}

}  // namespace
}  // namespace dtrn::model
