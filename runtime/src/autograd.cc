#include "dtrn/runtime/autograd.h"

#include <unordered_map>

#include "backend.h"
#include "dtrn/runtime/ops.h"

namespace dtrn {
namespace {

thread_local bool g_grad_mode = true;

bool participates(const Tensor& t) { return t.defined() && t.requires_grad(); }

Tensor accumulate(const Tensor& existing, const Tensor& g) {
  return existing.defined() ? add(existing, g) : g;
}

}  // namespace

bool grad_mode_enabled() { return g_grad_mode; }
NoGradGuard::NoGradGuard() : previous_(g_grad_mode) { g_grad_mode = false; }
NoGradGuard::~NoGradGuard() { g_grad_mode = previous_; }

Node::Node(std::string name, const std::vector<Tensor>& inputs, BackwardFn fn)
    : Node(std::move(name), inputs, 1,
           [fn = std::move(fn)](const std::vector<Tensor>& grads) { return fn(grads[0]); }) {}

Node::Node(std::string name, const std::vector<Tensor>& inputs, uint32_t num_outputs, MultiBackwardFn fn)
    : name_(std::move(name)), num_outputs_(num_outputs), fn_(std::move(fn)) {
  edges_.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (participates(t)) {
      if (t.grad_fn()) {
        e.node = t.grad_fn();
        e.output = t.impl().output_nr;
      } else {
        e.leaf = t.impl_ptr();
      }
    }
    edges_.push_back(std::move(e));
    input_shapes_.push_back(t.defined() ? t.shape() : Shape{});
  }
}

std::vector<Tensor> Node::apply(const std::vector<Tensor>& grad_outputs) {
  DTRN_CHECK(!released_, "backward through '", name_,
             "' a second time: its saved tensors were released after the first backward");
  DTRN_ASSERT(grad_outputs.size() == num_outputs_, name_, " backward got ", grad_outputs.size(),
              " output gradients for ", num_outputs_, " outputs");
  std::vector<Tensor> grads = fn_(grad_outputs);
  fn_ = nullptr;  // releases every tensor the backward captured
  released_ = true;
  DTRN_ASSERT(grads.size() == edges_.size(), name_, " backward returned ", grads.size(),
              " gradients for ", edges_.size(), " inputs");
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].defined() && edges_[i].valid()) {
      DTRN_ASSERT(grads[i].shape() == input_shapes_[i], name_, " backward: gradient ", i, " has shape ",
                  shape_str(grads[i].shape()), ", input had ", shape_str(input_shapes_[i]));
    }
  }
  return grads;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_mode) return false;
  for (const Tensor& t : inputs) {
    if (participates(t)) return true;
  }
  return false;
}

Tensor record(const std::string& name, Tensor output, const std::vector<Tensor>& inputs,
              Node::BackwardFn backward) {
  if (!needs_grad(inputs)) return output;
  output.impl().grad_fn = std::make_shared<Node>(name, inputs, std::move(backward));
  output.impl().requires_grad = true;
  return output;
}

std::vector<Tensor> record_outputs(const std::string& name, std::vector<Tensor> outputs,
                                   const std::vector<Tensor>& inputs, Node::MultiBackwardFn backward) {
  if (!needs_grad(inputs)) return outputs;
  auto node = std::make_shared<Node>(name, inputs, static_cast<uint32_t>(outputs.size()),
                                     std::move(backward));
  for (size_t k = 0; k < outputs.size(); ++k) {
    TensorImpl& impl = outputs[k].impl();
    DTRN_ASSERT(!impl.grad_fn && !impl.requires_grad, name, ": output ", k, " already has a history");
    impl.grad_fn = node;
    impl.output_nr = static_cast<uint32_t>(k);
    impl.requires_grad = true;
  }
  return outputs;
}

void run_backward(const Tensor& root, const Tensor& gradient) {
  DTRN_CHECK(root.requires_grad(), "backward() on a tensor that does not require grad");
  Tensor seed = gradient;
  if (!seed.defined()) {
    DTRN_CHECK(root.numel() == 1, "backward() without a gradient needs a scalar, got ",
               root.describe());
    seed = Tensor::full(root.shape(), 1.0, root.dtype(), root.device());
    seed.impl().known_value = 1.0;  // ops may use it without reading the device (cross_entropy)
  }
  DTRN_CHECK(seed.shape() == root.shape(), "backward(): gradient ", seed.describe(), " for ",
             root.describe());
  NoGradGuard no_grad;

  auto accumulate_leaf = [](TensorImpl& leaf, const Tensor& g) {
    // Each leaf owns its gradient's storage, so in-place updates (accumulation, clipping) never touch a
    // tensor shared with another leaf; the buffer is kept across backwards (no reallocation per
    // micro-batch). bf16 leaves accumulate in f32 (the mixed-precision recipe: fp32 gradients).
    if (leaf.grad) {
      Tensor buffer(leaf.grad);
      backend_for(buffer.device()).add_into(buffer, g.contiguous());
      return;
    }
    const DType want = leaf.dtype == DType::kBF16 ? DType::kF32 : leaf.dtype;
    leaf.grad = (g.dtype() == want ? g.clone() : g.to(want)).impl_ptr();
  };
  auto finished_leaf = [](TensorImpl& leaf) {
    if (leaf.post_accumulate_grad_hook) leaf.post_accumulate_grad_hook();
  };
  if (!root.grad_fn()) {
    accumulate_leaf(root.impl(), seed);
    finished_leaf(root.impl());
    return;
  }

  // Count, for every node reachable from the root, how many edges lead into it; and for every leaf with a
  // hook, how many edges lead into it, so that the hook runs after the last one.
  std::unordered_map<Node*, int> pending;
  std::unordered_map<TensorImpl*, int> leaf_pending;
  std::vector<Node*> stack = {root.grad_fn().get()};
  pending[stack.back()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->edges()) {
      if (e.leaf && e.leaf->post_accumulate_grad_hook) ++leaf_pending[e.leaf.get()];
      if (!e.node) continue;
      auto [it, inserted] = pending.try_emplace(e.node.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(e.node.get());
    }
  }

  // Kahn's order: a node runs once every consumer has passed it its gradient; one gradient slot per
  // output of the node (Note [Nodes with several outputs]). Keep the root's node alive through shared
  // ownership while it runs.
  std::unordered_map<Node*, std::vector<Tensor>> grads;
  auto slot = [&grads](Node* node, uint32_t output) -> Tensor& {
    std::vector<Tensor>& slots = grads[node];
    if (slots.empty()) slots.resize(node->num_outputs());
    return slots[output];
  };
  slot(root.grad_fn().get(), root.impl().output_nr) = seed;
  std::vector<std::shared_ptr<Node>> ready = {root.grad_fn()};
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    std::vector<Tensor> g;
    if (auto it = grads.find(node.get()); it != grads.end()) {
      g = std::move(it->second);
      grads.erase(it);
    }
    std::vector<Tensor> outs;
    bool any = false;
    for (const Tensor& t : g) any = any || t.defined();
    if (any) outs = node->apply(g);
    const auto& edges = node->edges();
    for (size_t i = 0; i < edges.size(); ++i) {
      const Edge& e = edges[i];
      const bool has = i < outs.size() && outs[i].defined();
      if (e.leaf) {
        if (has) accumulate_leaf(*e.leaf, outs[i]);
        if (e.leaf->post_accumulate_grad_hook && --leaf_pending[e.leaf.get()] == 0 && e.leaf->grad) {
          finished_leaf(*e.leaf);
        }
      } else if (e.node) {
        if (has) {
          Tensor& sum = slot(e.node.get(), e.output);
          sum = accumulate(sum, outs[i]);
        }
        if (--pending[e.node.get()] == 0) ready.push_back(e.node);
      }
    }
  }
}

void register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void()> hook) {
  DTRN_CHECK(leaf.is_leaf(), "register_post_accumulate_grad_hook: ", leaf.describe(), " is not a leaf");
  leaf.impl().post_accumulate_grad_hook = std::move(hook);
}

}  // namespace dtrn
