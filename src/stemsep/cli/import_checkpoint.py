"""``stemsep import-checkpoint``: convert an MSST-style checkpoint and its YAML config, without running pickled code.

    stemsep import-checkpoint model_bs_roformer_ep_317_sdr_12.9755.ckpt \\
        --config model_bs_roformer_ep_317_sdr_12.9755.yaml --model-type bs_roformer -o bs_roformer.ckpt
    stemsep import-checkpoint hs-tasnet.ckpt.10.pt --config keywords.yaml --model-type hstasnet -o hstasnet.ckpt

Other projects' own packages are read too: SCNet's ``.th`` (with its conf/config.yaml) and HS-TasNet's
``HSTasNet.save`` files (with a YAML of its keywords under ``model:``).
"""

from __future__ import annotations

import argparse

from stemsep.cli.common import add_output
from stemsep.io.import_checkpoint import MODEL_TYPES, import_checkpoint

HELP = "Convert an MSST-style checkpoint (state_dict + YAML config) safely."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="FILE.ckpt", help="MSST checkpoint (.ckpt/.pth: a torch state_dict), or a reference package "
                             "(SCNet .th, HS-TasNet .pt)")
    parser.add_argument("--config", required=True, metavar="CONFIG.yaml",
                        help="the YAML config released with it (audio:, model:, training:); for HS-TasNet, "
                             "model: with the reference's keywords")
    parser.add_argument("--model-type", default=None, choices=sorted(MODEL_TYPES),
                        help="MSST's model_type of the checkpoint (default: the config's training.model_type)")
    add_output(parser, "output", required=True, metavar="OUT.ckpt", help="stemsep checkpoint to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUT.ckpt if it exists")


def run(args: argparse.Namespace) -> int:
    summary = import_checkpoint(args.checkpoint, args.config, args.output, model_type=args.model_type,
                                force=args.force)
    print(f"{args.checkpoint} ({summary['model_type']}) -> {args.output}: {summary['class_path']}, "
          f"{summary['parameters']:,} parameters, sources {summary['sources']}")
    return 0
