"""Export a TADSR model to an ONNX bundle (docs/bundle-format.md).

From the authors' checkpoint folder (unet/, time_vae/, scheduler/, tadsr.pkl,
text_encoder/ + tokenizer/ or --prompt-embeds):

    python -m export --weights DIR --out models/X [--precision fp32|fp16]
                     [--text-encoder] [--default-prompt TEXT | --prompt-embeds FILE]

From seeded random weights (tests, benchmarks):

    python -m export --synthetic tiny|sd21 --seed N --out DIR [--precision fp32|fp16] [--golden]

Either with [--group-norm instance] [--attention fused] [--fusions cuda] for
graphs in the forms GPUs run fastest (--fusions cuda: CUDA only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="the authors' checkpoint folder")
    source.add_argument("--synthetic", choices=["tiny", "sd21"], help="seeded random weights of this size")
    parser.add_argument("--seed", type=int, default=0, help="seed of --synthetic (default 0)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--name", help="free-text bundle name (default: the config or folder name)")
    parser.add_argument("--text-encoder", action="store_true",
                        help="also export text_encoder/model.onnx and tokenizer/tokenizer.json")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--default-prompt",
                        help="prompt whose embedding becomes prompt_embeds.npy (needs text_encoder/)")
    prompt.add_argument("--prompt-embeds", help=".npy [1,77,D] float32 default conditioning")
    parser.add_argument("--golden", action="store_true",
                        help="also (re)write <out>/golden/ references from the input PNGs there")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    parser.add_argument("--no-tiled-vae", action="store_true",
                        help="leave out vae_encoder/tiled.onnx and vae_decoder/tiled.onnx (the VAE with shared "
                             "GroupNorm statistics; without them tiled runs normalize each tile by itself)")
    parser.add_argument("--group-norm", choices=["rowwise", "instance"],
                        help="how GroupNorms are written: rowwise (row-by-row statistics, exact on the CPU at any "
                             "size; the default) or instance (PyTorch's InstanceNormalization form: fewer GPU "
                             "kernels; ONNX Runtime's CPU kernel is off by ~3e-4 on multi-megapixel groups; the "
                             "default with --fusions cuda)")
    parser.add_argument("--attention", choices=["onnx", "fused"],
                        help="how attention is written: onnx (standard operators; the default) or fused (one "
                             "com.microsoft.MultiHeadAttention node each: fused kernels on CUDA, a CPU kernel too; "
                             "the default with --fusions cuda)")
    parser.add_argument("--fusions", choices=["none", "cuda"], default="none",
                        help="none (the default) or cuda: the three main graphs rewritten by ONNX Runtime's own "
                             "fuser (GroupNorm, NhwcConv, SkipGroupNorm, BiasSplitGelu, SkipLayerNormalization: "
                             "CUDA-only kernels), as its Stable Diffusion pipeline does; the bundle then runs on CUDA "
                             "only")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip measuring each graph's memory (the manifest's memory, used by --tile auto)")
    args = parser.parse_args(argv)
    if args.fusions == "cuda":
        if args.group_norm == "rowwise" or args.attention == "onnx":
            parser.error("--fusions cuda needs --group-norm instance and --attention fused (the forms ONNX "
                         "Runtime's fuser recognizes; they are the default with it)")
        args.group_norm, args.attention = "instance", "fused"
    args.group_norm = args.group_norm or "rowwise"
    args.attention = args.attention or "onnx"

    import torch

    torch.manual_seed(0)
    started = time.time()
    if args.synthetic:
        if args.default_prompt is not None or args.text_encoder:
            parser.error("--synthetic bundles have no text encoder (--default-prompt/--text-encoder)")
        from .synthetic import synthetic_models

        models = synthetic_models(args.synthetic, args.seed)
        if args.prompt_embeds:
            import numpy as np

            models.prompt_embeds = torch.from_numpy(np.load(args.prompt_embeds).astype("float32"))
        name = args.name or args.synthetic
    else:
        from .checkpoint import CheckpointError, load_checkpoint

        try:
            models = load_checkpoint(
                Path(args.weights),
                prompt=args.default_prompt,
                prompt_embeds=Path(args.prompt_embeds) if args.prompt_embeds else None,
                want_text_encoder=args.text_encoder,
            )
        except CheckpointError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        name = args.name or Path(args.weights).resolve().name
    print(f"model ready in {time.time() - started:.1f} s; exporting {args.precision} to {args.out}", flush=True)

    from .bundle import export_bundle

    export_bundle(models, Path(args.out), precision=args.precision, name=name, text_encoder=args.text_encoder,
                  verify=not args.no_verify, tiled_vae=not args.no_tiled_vae,
                  measure_memory=not args.no_memory, group_norm=args.group_norm,
                  attention=args.attention, fusions=args.fusions)
    if args.golden:
        from .golden import write_golden

        write_golden(Path(args.out))
    print(f"done in {time.time() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
