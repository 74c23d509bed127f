"""LightningCLI for ``stemsep fit|validate|test|predict``.

The model is always :class:`stemsep.training.SeparationModule` (its ``net`` is any network,
chosen by ``class_path``); the data module is any ``LightningDataModule`` subclass.
Config errors (unknown key, wrong type) become one-line :class:`StemsepError` messages.

Checkpoints given to ``--ckpt_path`` (resume) load with ``weights_only=True`` (set here
explicitly, whatever torch's default or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``; a config may
still say ``weights_only: false`` for a trusted file): a checkpoint holding pickled code is
refused with one line, without running it.
"""

from __future__ import annotations

import argparse
import pickle
import sys

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.checkpoint import REFUSED, SAFE_GLOBALS
from stemsep.training.module import SeparationModule


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    # jsonargparse nests the real cause after a preamble; keep from the key onwards.
    for marker in ("Validation failed: ", "Parser key "):
        if marker in text:
            text = text[text.index(marker) + (len(marker) if marker.startswith("Validation") else 0):]
    return text


def run_lightning_cli(argv: list[str]) -> None:
    """Run LightningCLI on ``argv`` (``['fit', '--config', ...]``)."""
    saved_argv = sys.argv
    torch.serialization.add_safe_globals(SAFE_GLOBALS)  # plain values our checkpoints may hold
    if argv and not argv[0].startswith("-") and not any(a.startswith("--weights_only") for a in argv):
        argv = [argv[0], "--weights_only=true", *argv[1:]]  # first, so a --config can still override it
    # LightningCLI reads sys.argv; DDP's launcher re-runs sys.argv[0] in each new process.
    sys.argv = [saved_argv[0] if saved_argv else "stemsep", *argv]
    try:
        LightningCLI(
            SeparationModule,
            L.LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except argparse.ArgumentError as err:
        raise StemsepError(f"config: {_one_line(err)}") from None
    except pickle.UnpicklingError:  # torch's weights_only refusal
        raise BadCheckpointError(f"{_ckpt_path(argv)}: {REFUSED} (load it with --weights_only false only if "
                                 "you trust it)") from None
    finally:
        sys.argv = saved_argv


def _ckpt_path(argv: list[str]) -> str:
    """The ``--ckpt_path`` of a command line, for error messages."""
    for i, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return "ckpt_path"
