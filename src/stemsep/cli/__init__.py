"""The ``stemsep`` command.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands; the toolkit's own
commands (``synth``, ``shard``, ``separate``, ...) are plain argparse programs, one small module
each in this package (``HELP``, ``add_arguments(parser)``, ``run(args)``) that parses the command
line and calls one typed library function (docs/python-api.md). Every user error is printed as one
line, ``stemsep: error: ...``, with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import sys

from stemsep.errors import StemsepError

LIGHTNING_COMMANDS = {
    "fit": "Train a model (LightningCLI: --config recipes/<recipe>.yaml).",
    "validate": "Run validation on a checkpoint.",
    "test": "Evaluate a checkpoint on the test set (distributed, per-track results).",
    "predict": "Run the predict loop.",
}

# name -> module in stemsep.cli (its HELP is the one-line help). A command is offered only once its
# module exists.
TOOL_COMMANDS = {
    "synth": "stemsep.cli.synth",
    "shard": "stemsep.cli.shard",
    "audit": "stemsep.cli.audit",
    "separate": "stemsep.cli.separate",
    "score": "stemsep.cli.score",
    "report": "stemsep.cli.report",
    "import-demucs": "stemsep.cli.import_demucs",
    "import-checkpoint": "stemsep.cli.import_checkpoint",
    "merge-lora": "stemsep.cli.merge_lora",
    "bag": "stemsep.cli.bag",
    "export": "stemsep.cli.export",
    "quantize": "stemsep.cli.quantize",
    "stream": "stemsep.cli.stream",
    "models": "stemsep.cli.models",
    "ensemble": "stemsep.cli.ensemble",
    "listen": "stemsep.cli.listen",
}


def available_tools() -> dict[str, str]:
    return {name: module for name, module in TOOL_COMMANDS.items() if importlib.util.find_spec(module) is not None}


def version() -> str:
    """The installed distribution's version (package metadata), else the source tree's ``__version__``."""
    try:
        return importlib.metadata.version("stemsep")
    except importlib.metadata.PackageNotFoundError:
        from stemsep import __version__

        return __version__


def _print_help() -> None:
    print("usage: stemsep [--debug] [--version] COMMAND [ARGS]\n\nMusic source separation toolkit.\n\n"
          "training (LightningCLI):")
    for name, text in LIGHTNING_COMMANDS.items():
        print(f"  {name:<14} {text}")
    print("\ntools:")
    for name, module in available_tools().items():
        print(f"  {name:<14} {importlib.import_module(module).HELP}")
    print("\n`stemsep COMMAND --help` shows the options of one command.")


def _run_tool(name: str, argv: list[str]) -> int:
    module = importlib.import_module(available_tools()[name])
    parser = argparse.ArgumentParser(prog=f"stemsep {name}", description=module.HELP)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)


def _run_lightning(argv: list[str]) -> int:
    from stemsep.training.cli import run_lightning_cli

    run_lightning_cli(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("STEMSEP_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0
    if argv[0] == "--version":
        print(f"stemsep {version()}")
        return 0
    command = argv[0]
    try:
        if command in LIGHTNING_COMMANDS:
            return _run_lightning(argv)
        if command in available_tools():
            return _run_tool(command, argv[1:])
        print(f"stemsep: error: unknown command {command!r} (see `stemsep --help`)", file=sys.stderr)
        return 2
    except StemsepError as err:
        if debug:
            raise
        print(f"stemsep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stemsep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
