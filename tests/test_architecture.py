"""The package layers of docs/architecture.md hold for every import in src/stemsep.

Parses every module with ``ast`` and collects each static ``import``/``from`` (at any depth:
lazy imports inside functions count) and each ``importlib.import_module("literal")``. A stemsep
package may import only the packages its row allows, and no two modules import each other,
directly or through others.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stemsep"

# package -> the stemsep packages it may import (itself always allowed).
ALLOWED = {
    "errors": set(),
    "contract": {"errors"},
    "io": {"errors", "contract"},
    "models": {"errors", "contract"},
    "evaluation": {"errors", "contract", "io"},
    "inference": {"errors", "contract", "io", "models"},
    "data": {"errors", "contract", "io", "evaluation", "inference", "models"},
    "training": {"errors", "contract", "io", "models", "evaluation", "inference", "data"},
    "cli": {"errors", "contract", "io", "models", "evaluation", "inference", "data", "training"},
}
# The package root (its version, re-exports of the bottom layer) may be imported by every layer;
# it imports only the bottom layer itself. `python -m stemsep` runs the cli.
ROOT_ALLOWED = {"": {"errors", "contract"}, "__main__": {"cli"}}
# The one exception: the root's module-level ``__getattr__`` re-exports ``stemsep.Separator``
# (issue 15's Python API) by importing it on first access. It is lazy, so `import stemsep` still
# loads only the bottom layer (test_root_loads_only_the_bottom_layer); no other root import may be.
LAZY_ROOT_EXPORTS = {"stemsep.inference.separator"}
EVERYONE = {""}
# Former homes that now only name the new one (they import nothing): bottom layer.
ALIASES = {"callbacks": "errors"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(module: str) -> str:
    """``stemsep.io.audio`` -> ``io``; ``stemsep`` -> ``""``."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    return ALIASES.get(name, name)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, imported stemsep module)`` for every import in the file, lazy ones included."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when it is one
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else target))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name == "stemsep" or name.startswith("stemsep.")]


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (SRC.parent / relative).with_suffix(".py").is_file() or (SRC.parent / relative / "__init__.py").is_file()


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_is_in_the_table():
    packages = {package_of(module_name(p)) for p in sources()}
    assert packages <= set(ALLOWED) | set(ROOT_ALLOWED), packages - set(ALLOWED) - set(ROOT_ALLOWED)


def test_imports_follow_the_layers():
    bad = []
    for path in sources():
        here = package_of(module_name(path))
        allowed = ROOT_ALLOWED[here] if here in ROOT_ALLOWED else ALLOWED.get(here, set()) | EVERYONE
        lazy = _lazy_root_exports(path) if here == "" and path.name == "__init__.py" else set()
        for line, target in imports_of(path):
            if (line, target) in lazy:
                continue
            there = package_of(target)
            if there != here and there not in allowed:
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({here or 'stemsep'}) imports {target}")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def _lazy_root_exports(path: Path) -> set[tuple[int, str]]:
    """``(line, module)`` of the LAZY_ROOT_EXPORTS imports inside the root's ``def __getattr__``."""
    tree = ast.parse(path.read_text(), str(path))
    getattr_ = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    return {(node.lineno, node.module) for fn in getattr_ for node in ast.walk(fn)
            if isinstance(node, ast.ImportFrom) and node.module in LAZY_ROOT_EXPORTS}


def test_root_loads_only_the_bottom_layer():
    """`import stemsep` loads errors and contract only; `stemsep.Separator` then loads inference."""
    code = ("import sys, stemsep; "
            "bad = sorted(m for m in sys.modules if m.startswith('stemsep.') "
            "and m.split('.')[1] not in ('errors', 'contract')); "
            "assert not bad, bad; "
            "from stemsep.inference import Separator; assert stemsep.Separator is Separator")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_cycles():
    graph = {module_name(p): {t for _, t in imports_of(p)} for p in sources()}
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # A package's __init__ importing its own submodules is not a cycle of the code's design:
    # drop edges from a submodule to one of its ancestors' __init__ re-export modules.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # package <-> its own submodule (re-exports)
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_models_load_nothing_but_the_bottom_layer():
    code = ("import sys, stemsep.models; "
            "bad = sorted(m for m in sys.modules if m.startswith('lightning') or m.startswith('pytorch_lightning') "
            "or (m.startswith('stemsep.') and m.split('.')[1] not in ('models', 'errors', 'contract'))); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


COMMANDS = sorted(p for p in (SRC / "cli").glob("*.py") if p.stem not in ("__init__", "common"))


# The LightningCLI (training layer, as the table says) is a command-line parser itself.
PARSERS = {"stemsep.training.cli"}


def test_argparse_lives_in_the_cli_only():
    """No library function can take an ``argparse.Namespace``: nothing outside stemsep.cli parses."""
    offenders = [str(p.relative_to(SRC.parent)) for p in sources()
                 if package_of(module_name(p)) != "cli" and module_name(p) not in PARSERS and "argparse" in {
                     alias.name for node in ast.walk(ast.parse(p.read_text()))
                     if isinstance(node, (ast.Import, ast.ImportFrom))
                     for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}]
    assert not offenders, offenders


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.stem)
def test_command_module_parses_and_calls_one_library_function(path: Path):
    """``run(args)`` calls one function imported from the library, with values, not the Namespace."""
    tree = ast.parse(path.read_text())
    library = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("stemsep.") and not node.module.startswith("stemsep.cli")
               for alias in node.names}
    run = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "run")
    calls = [node for node in ast.walk(run) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id in library]
    assert len({c.func.id for c in calls}) == 1, f"{path.name}: run calls {[c.func.id for c in calls]}"
    for call in calls:
        passed = list(call.args) + [k.value for k in call.keywords]
        assert not any(isinstance(a, ast.Name) and a.id == "args" for a in passed), \
            f"{path.name}:{call.lineno} passes the argparse Namespace on"


MAX_LINES = 400


def test_long_modules_say_why_they_are_one_module():
    """A module of src/stemsep over 400 lines says, in the first lines of its docstring, why it is
    kept as one module ("one module"); otherwise it is split."""
    long = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "one module" not in "\n".join(doc.splitlines()[:5]):
            long.append(f"{path.relative_to(SRC)} ({text.count(chr(10))} lines)")
    assert not long, f"modules over {MAX_LINES} lines without their reason: {long}"


# Subpackages of stemsep.data, in layers too: each imports only those listed (and itself).
DATA_ALLOWED = {"corpus": set(), "shards": {"corpus"}, "augment": set(), "loaders": {"corpus", "shards", "augment"}}


def test_data_subpackages_follow_their_layers():
    data = SRC / "data"
    found = {p.name for p in data.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(DATA_ALLOWED), f"data subpackages {found} vs the table {set(DATA_ALLOWED)}"
    assert sorted(p.name for p in data.glob("*.py")) == ["__init__.py"], "data modules belong in a subpackage"
    bad = []
    for path in sorted(data.rglob("*.py")):
        parts = module_name(path).split(".")
        if len(parts) < 3:
            continue
        here = parts[2]
        for line, target in imports_of(path):
            tparts = target.split(".")
            if tparts[:2] == ["stemsep", "data"] and len(tparts) > 2 and tparts[2] != here \
                    and tparts[2] not in DATA_ALLOWED[here]:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not bad, bad
