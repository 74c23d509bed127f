"""LightningCLI for ``stemsep fit|validate|test|predict``.

The model is always :class:`stemsep.module.SeparationModule` (its ``net`` is any network,
chosen by ``class_path``); the data module is any ``LightningDataModule`` subclass.
Config errors (unknown key, wrong type) become one-line :class:`StemsepError` messages.
"""

from __future__ import annotations

import argparse
import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

from .errors import StemsepError
from .module import SeparationModule


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
    finally:
        sys.argv = saved_argv
