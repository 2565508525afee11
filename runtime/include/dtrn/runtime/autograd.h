// Reverse-mode automatic differentiation over a recorded graph.
//
// Every op that reads a tensor with requires_grad (while grad mode is on) gives its output a grad_fn: a
// Node that maps the output's gradient to one gradient per input and holds edges to the inputs' producers
// (or to the leaf tensors themselves); an op with several outputs (add_rmsnorm) gives them one shared
// Node, which runs once with every output's gradient (Note [Nodes with several outputs]).
// Tensor::backward runs the nodes once each in reverse topological order, summing gradients that meet,
// and accumulates into leaves' .grad. Backward itself runs with grad mode off (no double backward). A
// node releases its saved tensors right after it has run, so a graph can be backpropagated once; a
// second backward through it fails with a clear error.
//
// Note [Saving outputs]
// A node that needs its op's output must save output.detach(): saving the output itself would make the
// output own the node that owns the output, a reference cycle that leaks the whole graph.
//
// Note [Nodes with several outputs]
// A fused op whose outputs feed different consumers (add_rmsnorm's sum h and normed n) needs both
// gradients in one backward, so that one kernel combines them (dh + the norm's dx) instead of the
// engine adding them in a separate pass. Each output's TensorImpl names its place among the node's
// outputs (output_nr), each edge names the output it leads into, and the engine collects one gradient
// per output; the node runs once every consumer of every output has passed its gradient, with an
// undefined gradient for an output no consumer sent one to.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dtrn/runtime/tensor.h"

namespace dtrn {

struct Edge {
  std::shared_ptr<Node> node;        // an interior input: its producer
  std::shared_ptr<TensorImpl> leaf;  // a leaf input that requires grad
  uint32_t output = 0;               // which of node's outputs the input is
  bool valid() const { return node != nullptr || leaf != nullptr; }
};

class Node {
 public:
  using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;
  // grad_outputs[k] is output k's gradient, undefined where no consumer sent one (at least one is
  // defined).
  using MultiBackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

  Node(std::string name, const std::vector<Tensor>& inputs, BackwardFn fn);
  Node(std::string name, const std::vector<Tensor>& inputs, uint32_t num_outputs, MultiBackwardFn fn);

  const std::string& name() const { return name_; }
  const std::vector<Edge>& edges() const { return edges_; }
  uint32_t num_outputs() const { return num_outputs_; }
  // One gradient per input (undefined where that input needs none) from one per output. Runs once;
  // then releases.
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs);

 private:
  std::string name_;
  std::vector<Edge> edges_;
  std::vector<Shape> input_shapes_;
  uint32_t num_outputs_;
  MultiBackwardFn fn_;
  bool released_ = false;
};

// Grad mode: on by default, per thread.
bool grad_mode_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any input requires grad.
bool needs_grad(const std::vector<Tensor>& inputs);
// Gives `output` a grad_fn over `inputs` when needs_grad(inputs); returns output for chaining.
Tensor record(const std::string& name, Tensor output, const std::vector<Tensor>& inputs,
              Node::BackwardFn backward);
// Gives every one of `outputs` the same grad_fn, a node with outputs.size() outputs, when
// needs_grad(inputs) (Note [Nodes with several outputs]); returns the outputs.
std::vector<Tensor> record_outputs(const std::string& name, std::vector<Tensor> outputs,
                                   const std::vector<Tensor>& inputs, Node::MultiBackwardFn backward);

void run_backward(const Tensor& root, const Tensor& gradient);

// Calls `hook` during every backward that reaches `leaf`, right after the backward's last contribution
// to leaf.grad was accumulated: from then on that backward does not touch the gradient again, so the hook
// may start work on it (data parallelism all-reduces gradient buckets while the rest of the backward runs).
// The hook runs on the backward's thread; an empty hook removes it.
void register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void()> hook);

}  // namespace dtrn
