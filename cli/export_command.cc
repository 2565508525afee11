// `dtrn export`: a checkpoint -> one safetensors file with Hugging Face Llama tensor names.
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/train/checkpoint.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] = "usage: dtrn export --checkpoint DIR --out FILE.safetensors\n";
constexpr char kHelp[] =
    "\nWrites the model of a checkpoint (a checkpoint folder, or a run directory: its newest) as one\n"
    "safetensors file: model.embed_tokens.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight,\n"
    "model.layers.N.mlp.{gate,up,down}_proj.weight, model.layers.N.{input,post_attention}_layernorm.weight,\n"
    "model.norm.weight (tied LM head, rotate-half RoPE), plus model.layers.N.router.{0,2}.{weight,bias}\n"
    "for the DTRNet layers. The metadata holds the model config and layout. `dtrn train --init-from`\n"
    "reads such a file back, or a dense Llama checkpoint of matching shape.\n";

}  // namespace

int run_export(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {{"checkpoint"}, {"out"}, {"help", false}});
  if (!args.ok()) return usage_error("export", args.status().message(), kUsage);
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->has("checkpoint") || !args->has("out")) return usage_error("export", "--checkpoint and --out are required", kUsage);
  auto ckpt = train::resolve_checkpoint(*args->get("checkpoint"));
  if (!ckpt.ok()) return fail("export", ckpt.status().message());
  Status st = train::export_safetensors(*ckpt, *args->get("out"));
  if (!st.ok()) return fail("export", st.message());
  std::cout << "exported " << *ckpt << " -> " << *args->get("out") << "\n";
  return 0;
}

}  // namespace dtrn::cli
