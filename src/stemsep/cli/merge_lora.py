"""``stemsep merge-lora``: fold the LoRA adapters of a fine-tuning run into their base network.

    stemsep merge-lora runs/roformer_lora_ft/checkpoints/last.ckpt -o roformer_ft.ckpt
"""

from __future__ import annotations

import argparse

from stemsep.cli.common import add_output
from stemsep.training.lora import merge_lora

HELP = "Merge a LoRA checkpoint's adapters into its base: a plain stemsep checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapters", metavar="LORA.ckpt", help="checkpoint of a run with model.lora (adapters only)")
    add_output(parser, "output", required=True, metavar="OUT.ckpt", help="stemsep checkpoint to write")
    parser.add_argument("--base", default=None, metavar="BASE.ckpt",
                        help="the base checkpoint (default: the path LORA.ckpt records; its sha256 must match)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def run(args: argparse.Namespace) -> int:
    summary = merge_lora(args.adapters, args.output, base=args.base, force=args.force)
    print(f"{args.adapters} + {summary['base']} -> {args.output}: {summary['adapter_parameters']:,} adapter "
          f"parameters merged into {summary['parameters']:,}, sources {summary['sources']}")
    return 0
