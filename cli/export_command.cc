// `dtrn export`: a checkpoint -> one safetensors file with Hugging Face Llama tensor names.
#include <iostream>

#include "args.h"
#include "commands.h"
#include "dtrn/train/checkpoint.h"

namespace dtrn::cli {
namespace {

constexpr char kUsage[] = "usage: dtrn export --checkpoint DIR --out FILE.safetensors [--force]\n";
constexpr char kHelp[] =
    "\nWrites the model of a checkpoint (a checkpoint folder, or a run directory: its newest) as one\n"
    "safetensors file: model.embed_tokens.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight,\n"
    "model.layers.N.mlp.{gate,up,down}_proj.weight, model.layers.N.{input,post_attention}_layernorm.weight,\n"
    "model.norm.weight (tied LM head, rotate-half RoPE), plus model.layers.N.router.{0,2}.{weight,bias}\n"
    "for the DTRNet layers. The metadata holds the model config and layout. `dtrn train --init-from`\n"
    "reads such a file back, or a dense Llama checkpoint of matching shape.\n\n"
    "  --force   replace FILE when it exists (without it an existing FILE is refused)\n\n"
    "Refuses, touching nothing: an existing FILE without --force, and any FILE inside a checkpoint\n"
    "folder (it would overwrite or add to the checkpoint's own files), --force or not. A corrupt newest\n"
    "checkpoint of a run directory is skipped with a warning on stderr naming it.\n";

}  // namespace

int run_export(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {{"checkpoint"}, {"out"}, {"force", false}, {"help", false}});
  if (!args.ok()) return usage_error("export", args.status().message());
  if (args->has("help")) {
    std::cout << kUsage << kHelp;
    return 0;
  }
  if (!args->has("checkpoint") || !args->has("out")) return usage_error("export", "--checkpoint and --out are required");
  auto ckpt = resolve_checkpoint_warning("export", *args->get("checkpoint"));
  if (!ckpt.ok()) return fail("export", ckpt.status().message());
  Status st = train::export_safetensors(*ckpt, *args->get("out"), args->has("force"));
  if (!st.ok()) return fail("export", st.message());
  std::cout << "exported " << *ckpt << " -> " << *args->get("out") << "\n";
  return 0;
}

}  // namespace dtrn::cli
