"""Option names alike across commands: every tool's output is ``-o``, ``--out`` or ``--output``;
several models are ``--model A --model B`` (``bag`` too); ``stemsep --version``; the README's
command table names every tool."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata

import pytest

from helpers import REPO
from helpers.recipes import save_tiny
from stemsep.cli import TOOL_COMMANDS, available_tools, main

OUTPUT_SPELLINGS = ("-o", "--out", "--output")


def _parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(available_tools()[name])
    parser = argparse.ArgumentParser(prog=f"stemsep {name}")
    module.add_arguments(parser)
    return parser


def _required_argv(parser: argparse.ArgumentParser, skip: argparse.Action) -> list[str]:
    """A command line giving each required argument (but ``skip``) a placeholder value."""
    argv: list[str] = []
    for action in parser._actions:
        if action is skip or not (action.required or not action.option_strings):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        value = str(next(iter(action.choices))) if action.choices else "x"
        argv += [value] if not action.option_strings else [action.option_strings[0], value]
    for group in parser._mutually_exclusive_groups:  # e.g. separate's --model | --models
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "x"]
    return argv


def _output_action(parser: argparse.ArgumentParser) -> argparse.Action | None:
    found = [a for a in parser._actions if set(a.option_strings) & set(OUTPUT_SPELLINGS)]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize("name", sorted(TOOL_COMMANDS))
def test_every_tool_output_takes_o_out_and_output(name):
    parser = _parser(name)
    action = _output_action(parser)
    assert action is not None, f"stemsep {name} has no -o/--out/--output"  # every tool writes something
    assert set(OUTPUT_SPELLINGS) <= set(action.option_strings), action.option_strings
    base = _required_argv(parser, action)
    values = {spelling: getattr(parser.parse_args([*base, spelling, "dest/x"]), action.dest)
              for spelling in OUTPUT_SPELLINGS}
    assert len({str(v) for v in values.values()}) == 1 and str(values["-o"]) == "dest/x", values


def test_old_output_names_still_work():
    assert str(_parser("bag").parse_args(["--models", "a", "--output", "o"]).output) == "o"
    assert _parser("synth").parse_args(["--out", "o"]).out == "o"
    assert str(_parser("export").parse_args(["c", "--out", "o"]).out) == "o"


@pytest.mark.parametrize("name, dest, before", [("bag", "models", []), ("separate", "model", ["song.wav"])])
def test_several_models_are_spelled_alike(name, dest, before):
    parser = _parser(name)
    repeated = parser.parse_args([*before, "--model", "a.ckpt", "--model", "b.ckpt", "-o", "out"])
    listed = parser.parse_args([*before, "--models", "a.ckpt", "b.ckpt", "-o", "out"])
    assert [str(p) for p in getattr(repeated, dest)] == [str(p) for p in getattr(listed, dest)] == ["a.ckpt", "b.ckpt"]


def test_bag_with_repeated_model_end_to_end(tmp_path, capsys):
    a, b = save_tiny(tmp_path / "a.ckpt", seed=0), save_tiny(tmp_path / "b.ckpt", seed=1)
    assert main(["bag", "--model", str(a), "--model", str(b), "--output", str(tmp_path / "bag.ckpt")]) == 0
    assert "bag of 2 model(s)" in capsys.readouterr().out and (tmp_path / "bag.ckpt").is_file()


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"stemsep {importlib.metadata.version('stemsep')}\n"
    assert main(["--debug", "--version"]) == 0
    assert capsys.readouterr().out.startswith("stemsep ")
    main(["--help"])
    assert "--version" in capsys.readouterr().out


def test_readme_lists_every_tool():
    readme = (REPO / "README.md").read_text()
    missing = [name for name in TOOL_COMMANDS if f"`stemsep {name}`" not in readme]
    assert not missing, missing
