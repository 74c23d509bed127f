"""LightningCLI for ``stemsep fit|validate|test|predict``.

The model is always :class:`stemsep.training.SeparationModule` (its ``net`` is any network,
chosen by ``class_path``); the data module is any ``LightningDataModule`` subclass.
Config errors (unknown key, wrong type) become one-line :class:`StemsepError` messages.

Besides Lightning's keys, the config has stemsep's default callbacks, visible in
``--print_config`` and each switched off with ``null`` (in a recipe or on the command line)::

    guards:
      logger: {class_path: stemsep.training.callbacks.LoggerGuard}        # failing loggers only warn
      nonfinite:                                                          # NaN/Inf steps skipped
        class_path: stemsep.training.callbacks.NonFiniteGuard
        init_args: {max_consecutive: null}   # null: model.max_nonfinite_steps (default 10)
    test_results:                                                         # per-track results of `test`
      class_path: stemsep.training.callbacks.TestResultWriter
      init_args: {dirpath: null}   # null: model.test_results_dir, else <log dir>/test_results

They are added after ``trainer.callbacks``. ``model.max_nonfinite_steps`` stays the one setting
of the non-finite guard (``null`` there switches it off too, as before); a ``max_consecutive`` given
to the guard itself takes precedence.

The data follows the network (:mod:`stemsep.training.linking`): ``data.init_args.sources``,
``segment`` and ``samplerate`` left unset are ``model.net``'s, filled in the config before
``--print_config`` prints it and before the classes are built, then checked on the built objects
(networks built from a checkpoint state theirs only then).

After ``stemsep fit`` saved a checkpoint, its last lines name the checkpoint and the
``stemsep separate ... --model <checkpoint>`` command to try it (:func:`next_command`).

Checkpoints given to ``--ckpt_path`` (resume) load with ``weights_only=True`` (set here
explicitly, whatever torch's default or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``; a config may
still say ``weights_only: false`` for a trusted file): a checkpoint holding pickled code is
refused with one line, without running it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import shlex
import sys
import weakref
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import lazy_instance
from jsonargparse._actions import _ActionPrintConfig
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.checkpoint import REFUSED, SAFE_GLOBALS, open_checkpoint, why_unloadable
from stemsep.io.remote import is_url
from stemsep.training.callbacks import LoggerGuard, NonFiniteGuard, TestResultWriter
from stemsep.training.linking import link_config, link_data
from stemsep.training.module import SeparationModule, building_from_config

# The config keys of stemsep's default callbacks, in the order they join the trainer's callbacks.
DEFAULT_CALLBACK_KEYS = ("guards.logger", "guards.nonfinite", "test_results")


class StemsepCLI(LightningCLI):
    """LightningCLI whose config lists stemsep's default callbacks (see the module docstring)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--guards.logger", type=LoggerGuard | None, default=lazy_instance(LoggerGuard),
                            help="Turns exceptions of the experiment loggers into warnings (null: off).")
        parser.add_argument("--guards.nonfinite", type=NonFiniteGuard | None,
                            default=lazy_instance(NonFiniteGuard),
                            help="Skips optimizer steps with a NaN/Inf loss or gradient; stops after "
                                 "max_consecutive in a row (default: model.max_nonfinite_steps; null: off).")
        parser.add_argument("--test_results", type=TestResultWriter | None, default=lazy_instance(TestResultWriter),
                            help="Writes the per-track results of `stemsep test` (null: off).")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; with ``--print_config``, print the config only once the data is linked to the network."""
        with _ActionPrintConfig.skip_print_config():
            super().parse_arguments(parser, args)
        if hasattr(parser, "print_config"):
            subcommand = self.config.get("subcommand")
            link_config(self.config.get(str(subcommand), self.config) if subcommand else self.config)
            _ActionPrintConfig.print_config_if_requested(parser, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        link_config(config)  # after --ckpt_path's hyperparameters replaced the model's
        reconcile_nonfinite(config, fitting=self.subcommand == "fit")
        check_accelerator(config.get("trainer.accelerator"), config.get("trainer.precision"))

    def instantiate_classes(self) -> None:
        with building_from_config():  # SeparationModule: hparams from the config, callbacks from the config
            super().instantiate_classes()
        link_data(self.model.net, self.datamodule, fitting=self.subcommand == "fit")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self.config_init.get(str(self.subcommand), self.config_init)
        extra = [callback for callback in (config.get(key) for key in DEFAULT_CALLBACK_KEYS) if callback is not None]
        if extra:
            callbacks = kwargs.get("callbacks", config.get("trainer.callbacks"))
            callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
            kwargs["callbacks"] = callbacks + extra
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        """A URL ``--ckpt_path`` is read once, here, as every remote checkpoint is (``open_checkpoint``:
        timeouts, retries, resuming, size/ETag checks), before Lightning takes the checkpoint's
        hyperparameters into the config (as for a local file); the run then loads the same local copy
        (:meth:`_run_subcommand`), removed at the end. The config keeps the URL."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt = config.get("ckpt_path") if config is not None else None
        if not (isinstance(ckpt, str) and is_url(ckpt)):
            return super()._parse_ckpt_path()
        self._remote_ckpt = contextlib.ExitStack()
        weakref.finalize(self, self._remote_ckpt.close)  # also when the run never starts
        self._remote_ckpt_file = str(self._remote_ckpt.enter_context(open_checkpoint(ckpt)))
        config["ckpt_path"] = self._remote_ckpt_file
        try:
            super()._parse_ckpt_path()
        finally:
            config["ckpt_path"] = ckpt

    def _run_subcommand(self, subcommand: str) -> None:
        """Lightning loads a URL ``--ckpt_path`` from the local copy :meth:`_parse_ckpt_path` made."""
        stack = getattr(self, "_remote_ckpt", None)
        if stack is None:
            return super()._run_subcommand(subcommand)
        config = self.config_init[subcommand]
        url, config["ckpt_path"] = config["ckpt_path"], self._remote_ckpt_file
        with stack:  # the local copy is removed when the run ends
            try:
                super()._run_subcommand(subcommand)
            finally:
                config["ckpt_path"] = url

    def after_fit(self) -> None:
        """Name the checkpoint a fit saved and the command that separates with it."""
        ckpt = saved_checkpoint(self.trainer)
        if ckpt is not None:
            adapters = getattr(self.model, "lora", None) is not None
            print_next_command(ckpt, example_input(self.datamodule), adapters=adapters)


def saved_checkpoint(trainer: L.Trainer) -> Path | None:
    """The checkpoint to use after a fit: the ``last`` one a ``ModelCheckpoint`` saved, else its best."""
    for callback in trainer.checkpoint_callbacks:
        for name in ("last_model_path", "best_model_path"):
            path = getattr(callback, name, "") or ""
            if path and Path(path).is_file():
                return Path(path)
    return None


def example_input(datamodule: L.LightningDataModule | None) -> str:
    """A mixture file of the data the model was trained on (a test song of a prepared corpus),
    for the printed command; ``song.wav`` when there is none to point at."""
    prepare = getattr(datamodule, "prepare", None)
    root = getattr(prepare, "root_path", None)
    if root is not None:
        for split in ("test", "valid", "train"):
            folder = root / split
            if not folder.is_dir():
                continue
            found = sorted(folder.glob("*/mixture.*")) + sorted(folder.glob("*.stem.mp4"))
            if found:
                return _shell_path(found[0])
    return "song.wav"


def _shell_path(path: Path) -> str:
    """``path`` for a shell command line: relative to the working directory when under it, ``~/...``
    when under the home folder, quoted where needed."""
    path = Path(os.path.abspath(path))
    try:
        return shlex.quote(str(path.relative_to(Path.cwd())))
    except ValueError:
        pass
    try:
        rest = path.relative_to(Path.home())
    except ValueError:
        return shlex.quote(str(path))
    quoted = shlex.quote(str(rest))
    return f"~/{rest}" if quoted == str(rest) else shlex.quote(str(path))


def next_command(ckpt: str | os.PathLike, song: str = "song.wav") -> str:
    """The ``stemsep separate`` command line that separates ``song`` with checkpoint ``ckpt``."""
    return f"stemsep separate {song} --model {_shell_path(Path(ckpt))} -o separated"


@rank_zero_only
def print_next_command(ckpt: str | os.PathLike, song: str = "song.wav", adapters: bool = False) -> None:
    """The last lines of a fit that saved a checkpoint (on stdout, flushed). ``adapters``: the
    checkpoint holds LoRA adapters only, so the merge comes first."""
    ckpt = Path(ckpt)
    lines = [f"checkpoint: {_shell_path(ckpt)}"]
    if adapters:
        merged = ckpt.with_name(f"{ckpt.stem}-merged{ckpt.suffix}")
        lines += ["it holds LoRA adapters: merge them into the base first:",
                  f"  stemsep merge-lora {_shell_path(ckpt)} -o {_shell_path(merged)}"]
        ckpt = merged
    lines += ["separate with it (any audio file or folder):", f"  {next_command(ckpt, song)}"]
    print("\n".join(lines), flush=True)


# Precisions a CPU only emulates (autocast to half types on the CPU: many times slower than float32).
GPU_PRECISIONS = {"16", "bf16", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine"}
CPU_TRY = ("--trainer.accelerator cpu --trainer.precision 32-true, and --data configs/data/synthetic.yaml "
           "to try it without MUSDB18 (docs/recipes.md)")


def gpu_available() -> bool:
    return torch.cuda.is_available()


def check_accelerator(accelerator: Any, precision: Any) -> None:
    """Before anything is built: a config that needs a GPU on a machine without one is a one-line
    error (``accelerator: gpu``/``cuda``), or a note on stderr when ``auto`` falls back to the CPU with
    a precision the CPU only emulates (a GPU recipe: minutes per step at full size)."""
    if not isinstance(accelerator, str | None) or gpu_available():  # an Accelerator object: the user's own
        return
    name = (accelerator or "auto").lower()
    if name in ("gpu", "cuda"):
        raise StemsepError(f"trainer.accelerator {accelerator}: no CUDA GPU is visible on this machine "
                           f"(torch.cuda.is_available() is False); to run on the CPU: {CPU_TRY}")
    if name in ("auto", "cpu") and str(precision) in GPU_PRECISIONS:
        print(f"stemsep: note: no GPU here: training on the CPU with precision {precision}, which the CPU "
              f"only emulates (a recipe made for GPUs: minutes per step at full size); on a CPU use {CPU_TRY}",
              file=sys.stderr, flush=True)


def reconcile_nonfinite(config, fitting: bool) -> None:
    """``guards.nonfinite`` takes its limit from ``model.max_nonfinite_steps`` unless it states one;
    ``model.max_nonfinite_steps: null`` switches the guard off."""
    guard, steps = config.get("guards.nonfinite"), config.get("model.max_nonfinite_steps")
    if guard is None:
        return
    if steps is None:
        config["guards.nonfinite"] = None
        return
    init_args = guard.get("init_args")
    limit = None if init_args is None else init_args.get("max_consecutive")
    if limit is not None and limit < 1:  # said here: jsonargparse would bury the guard's own error
        raise StemsepError(f"config: guards.nonfinite max_consecutive must be >= 1, got {limit} "
                           "(guards.nonfinite: null switches the guard off)")
    if limit is None and init_args is not None and steps >= 1:  # (the module reports steps < 1 itself)
        init_args["max_consecutive"] = steps


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    # jsonargparse nests the real cause after a preamble; keep from the key onwards.
    for marker in ("Validation failed: ", "Parser key "):
        if marker in text:
            text = text[text.index(marker) + (len(marker) if marker.startswith("Validation") else 0):]
    return text


def run_lightning_cli(argv: list[str], cli_class: type[StemsepCLI] = StemsepCLI) -> StemsepCLI:
    """Run LightningCLI on ``argv`` (``['fit', '--config', ...]``); returns the CLI (its ``model``,
    ``datamodule`` and ``trainer``). ``cli_class``: a subclass (tests build a recipe's classes without
    training with one whose ``_run_subcommand`` does nothing)."""
    saved_argv = sys.argv
    torch.serialization.add_safe_globals(SAFE_GLOBALS)  # plain values our checkpoints may hold
    if argv and not argv[0].startswith("-") and not any(a.startswith("--weights_only") for a in argv):
        argv = [argv[0], "--weights_only=true", *argv[1:]]  # first, so a --config can still override it
    # LightningCLI reads sys.argv; DDP's launcher re-runs sys.argv[0] in each new process.
    sys.argv = [saved_argv[0] if saved_argv else "stemsep", *argv]
    try:
        return cli_class(
            SeparationModule,
            L.LightningDataModule,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
        )
    except argparse.ArgumentError as err:
        raise StemsepError(f"config: {_one_line(err)}") from None
    except pickle.UnpicklingError as err:  # torch's weights_only refusal, or not a checkpoint at all
        path = _ckpt_path(argv)
        why = why_unloadable(path, str(err), type(err).__name__) if os.path.isfile(path) else REFUSED
        hint = " (load it with --weights_only false only if you trust it)" if why == REFUSED else ""
        raise BadCheckpointError(f"{path}: {why}{hint}") from None
    except (ValueError, TypeError, RuntimeError) as err:  # jsonargparse wraps what a class raised while built
        cause = stemsep_cause(err)
        if cause is None:
            raise
        raise cause from None
    finally:
        sys.argv = saved_argv


def stemsep_cause(err: BaseException) -> StemsepError | None:
    """The :class:`StemsepError` behind ``err`` (its ``__cause__``/``__context__`` chain), if any: a
    class of the config that refused its arguments while jsonargparse built it (e.g. a data module
    whose manifest is missing) keeps its one-line message instead of a wrapped traceback."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, StemsepError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _ckpt_path(argv: list[str]) -> str:
    """The ``--ckpt_path`` of a command line, for error messages."""
    for i, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return "ckpt_path"
