"""``stemsep import-demucs`` as a library function: convert an official demucs model file into a stemsep checkpoint.

A demucs model file (``955717e8-8726e21a.th``, written by demucs' ``serialize_model`` and
``save_with_checksum``) is a ``torch.save`` of
``{"klass": <class>, "args": (...), "kwargs": {...}, "state": {name: tensor}, "training_args": {...}}``.
Loading it the way demucs does (``torch.load(weights_only=False)``) runs whatever the pickle
says, so a tampered download can execute code. We read it with torch's *weights-only*
unpickler, which builds tensors and plain containers only and refuses every other global
reference. Two kinds of global are allowed on top of torch's own list:

* ``fractions.Fraction`` (demucs stores ``segment`` as a Fraction) — a harmless value type;
* the demucs model classes (``demucs.htdemucs.HTDemucs``, ...) — as *names only*: the
  unpickler is handed an inert :class:`DemucsClassRef` marker instead of the class, demucs is
  never imported, and calling the marker during unpickling fails.

The marker picks our class of the same architecture, which is built from the stored
``kwargs``; the weights are loaded strictly and written with
:func:`stemsep.io.checkpoint.save_checkpoint`, so :func:`stemsep.io.checkpoint.load_separator`
rebuilds the model without any pickled object.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from stemsep.contract import network_config
from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.checkpoint import import_class, open_checkpoint, refused_globals, save_checkpoint
from stemsep.io.remote import name_of
from stemsep.io.weights import load_weights


class RefusedCall(Exception):
    """A pickle tried to call a demucs class marker (real demucs files only name the class)."""


@dataclass(frozen=True)
class DemucsClassRef:
    """Stands in for a demucs class named in a checkpoint; never constructs anything."""

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RefusedCall(self.name)


# demucs class path -> the class path of our network of the same architecture (a name, resolved
# like any checkpoint's class path: this layer does not depend on the models package).
SUPPORTED = {
    "demucs.htdemucs.HTDemucs": "stemsep.models.HTDemucs",
    "demucs.hdemucs.HDemucs": "stemsep.models.HDemucs",
}
KNOWN_UNSUPPORTED = ["demucs.demucs.Demucs", "demucs.tasnet.ConvTasNet", "demucs.tasnet_v2.ConvTasNet",
                     "demucs.wdemucs.WDemucs", "demucs.apply.BagOfModels"]
CLASS_REFS = {name: DemucsClassRef(name) for name in [*SUPPORTED, *KNOWN_UNSUPPORTED]}
ALLOWED_GLOBALS: list[Any] = [Fraction, *((ref, name) for name, ref in CLASS_REFS.items())]


def read_demucs_package(path: str | Path) -> dict[str, Any]:
    """Unpickle ``path`` (a path or a URL) without running code; a one-line BadCheckpointError on any problem."""
    with open_checkpoint(path, "file", by_name=False) as file:
        return _read_demucs_package(name_of(path), file)


def _read_demucs_package(path: str | Path, file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise BadCheckpointError(f"{path}: file not found")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            package = torch.load(file, map_location="cpu", weights_only=True)
    except RefusedCall as err:
        raise BadCheckpointError(f"{path}: refused, the pickle tries to construct {err} while loading "
                                 "(possibly malicious)") from None
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        text = str(err)
        offending = refused_globals(file, text, frozenset({"fractions.Fraction", *CLASS_REFS}))
        if offending:
            raise BadCheckpointError(f"{path}: refused, the pickle references {offending}, which is not a "
                                     "tensor, a plain value or a demucs model class (possibly malicious)") from None
        first = text.strip().splitlines()[0] if text.strip() else ""
        if "Weights only load failed" in first:
            first = next((line for line in text.splitlines()[1:] if line.strip()), first)
        raise BadCheckpointError(f"{path}: not a readable torch file, truncated or corrupt "
                                 f"({type(err).__name__}: {first.strip()})") from None
    if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= set(package):
        keys = sorted(package) if isinstance(package, dict) else type(package).__name__
        raise BadCheckpointError(f"{path}: not a demucs model package (expected keys klass, kwargs, state; "
                                 f"found {keys})")
    return package


def _plain(value: Any, where: str) -> Any:
    """Check that a stored constructor argument is a plain value (JSON-like or Fraction)."""
    if value is None or isinstance(value, (bool, int, float, str, Fraction)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise BadCheckpointError(f"{where}: unsupported value of type {type(value).__name__}")


def build_model(package: dict[str, Any], path: Path, attention: str | None = None):
    """Our network for ``package``: (model with weights, its net config, dropped kwargs)."""
    klass = package["klass"]
    name = klass.name if isinstance(klass, DemucsClassRef) else repr(klass)
    if name not in SUPPORTED:
        raise BadCheckpointError(f"{path}: model class {name} is not supported (only "
                                 f"{', '.join(sorted(SUPPORTED))}); bags are assembled with `stemsep bag`")
    class_path = SUPPORTED[name]
    cls = import_class(class_path, origin=str(path))
    args, kwargs = package.get("args") or (), package["kwargs"]
    if not isinstance(kwargs, dict) or not isinstance(args, (list, tuple)):
        raise BadCheckpointError(f"{path}: args/kwargs of the model are malformed")
    kwargs = _plain(dict(kwargs), f"{path}: kwargs")
    args = _plain(list(args), f"{path}: args")
    parameters = inspect.signature(cls).parameters
    # Like demucs' own loader, drop arguments this architecture no longer takes.
    dropped = sorted(k for k in kwargs if k not in parameters)
    kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    if attention is not None:
        if "attention" not in parameters:
            raise StemsepError(f"attention: {class_path} has no attention backend to choose")
        kwargs["attention"] = attention
    try:
        bound = inspect.signature(cls).bind(*args, **kwargs)
        net = cls(*bound.args, **bound.kwargs)
    except StemsepError:
        raise  # a config error of ours (e.g. an unknown attention backend), already one line
    except (TypeError, ValueError) as err:
        raise BadCheckpointError(f"{path}: cannot build {class_path} from the stored arguments ({err})") from None
    state = package["state"]
    if not isinstance(state, dict):
        raise BadCheckpointError(f"{path}: 'state' is not a dict of tensors")
    if state.get("__quantized"):
        raise BadCheckpointError(f"{path}: DiffQ-quantized weights are not supported; use a non-quantized model")
    load_weights(net, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, origin=str(path))
    init_args = _plain(network_config(net)["init_args"] or dict(bound.arguments), f"{path}: init_args")
    return net.eval(), {"class_path": class_path, "init_args": init_args}, dropped


def import_demucs(src: str | Path, dst: str | Path, *, attention: str | None = None,
                  force: bool = False) -> dict[str, Any]:
    """``stemsep import-demucs`` as a library function: convert ``src`` (demucs ``.th``) into the stemsep checkpoint ``dst``.

    ``attention``: the HT Demucs attention backend to record (default dense); ``force``: overwrite
    ``dst``. Returns a summary: demucs class, our class path, parameters, sources and the stored
    constructor arguments that were dropped.
    """
    src, dst = name_of(src), Path(dst)  # a URL stays a string
    if dst.exists() and not force:
        raise StemsepError(f"{dst}: already exists (use --force to overwrite)")
    package = read_demucs_package(src)
    net, config, dropped = build_model(package, src, attention)
    provenance = {"file": Path(src).name, "klass": package["klass"].name, "dropped_kwargs": dropped}
    save_checkpoint(dst, net, config, {"imported_from": provenance})
    return {**provenance, "class_path": config["class_path"],
            "parameters": sum(p.numel() for p in net.parameters()), "sources": list(net.sources)}
