"""Safe checkpoint loading and the stemsep checkpoint layout.

A stemsep checkpoint is a Lightning-style dict, loadable with ``torch.load(weights_only=True)``:

``{"state_dict": {"net.<param>": tensor, ...},
   "hyper_parameters": {"net": {"class_path": "pkg.Class", "init_args": {...}}, ...},
   "stemsep": {"version": "...", "sources": [...], "samplerate": int, "audio_channels": int}}``

Lightning writes it for trained models (``SeparationModule`` records the network's
``class_path``/``init_args`` through LightningCLI); ``stemsep import-demucs`` and
``stemsep bag`` write the same layout. Nothing here ever unpickles arbitrary objects.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import BadCheckpointError
from .fsutil import atomic_path

# Plain types a checkpoint may hold besides tensors and containers.
SAFE_GLOBALS = [Fraction]
REFUSED = "refused, it holds pickled code or objects, not only weights"


def records_init_args(cls: type) -> type:
    """Class decorator: each instance keeps its constructor arguments in ``init_args``.

    ``SeparationModule`` stores them (with the class path) in checkpoints built from Python,
    so :func:`load_separator` can rebuild the network without any pickled object.
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        if type(self) is cls:  # a subclass records its own arguments
            arguments = dict(list(bound.arguments.items())[1:])
            extra = arguments.pop(next((p.name for p in signature.parameters.values()
                                        if p.kind is p.VAR_KEYWORD), ""), {})
            self.init_args = {**arguments, **extra}

    cls.__init__ = __init__
    return cls


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: refuses any pickled code, names the file."""
    path = Path(path)
    if not path.is_file():
        raise BadCheckpointError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            raise BadCheckpointError(f"{path}: {REFUSED}") from None
        raise BadCheckpointError(f"{path}: not a readable checkpoint ({msg})") from None
    if not isinstance(ckpt, dict):
        raise BadCheckpointError(f"{path}: not a stemsep checkpoint (top level is {type(ckpt).__name__})")
    return ckpt


def import_class(class_path: str, *, base: type = nn.Module, origin: str = "config") -> type:
    """Import ``pkg.mod.Class`` and check it subclasses ``base``."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise BadCheckpointError(f"{origin}: cannot import class {class_path!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise BadCheckpointError(f"{origin}: {class_path!r} is not a {base.__name__} class")
    return cls


def build_from_config(config: dict[str, Any], *, origin: str = "config") -> nn.Module:
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` (nested configs allowed)."""
    if not isinstance(config, dict) or "class_path" not in config:
        raise BadCheckpointError(f"{origin}: network config has no class_path")
    cls = import_class(config["class_path"], origin=origin)
    args = {k: _instantiate_nested(v, origin) for k, v in (config.get("init_args") or {}).items()}
    try:
        return cls(**args)
    except TypeError as err:
        raise BadCheckpointError(f"{origin}: cannot build {config['class_path']} ({err})") from None


def _instantiate_nested(value: Any, origin: str) -> Any:
    if isinstance(value, dict) and "class_path" in value:
        return build_from_config(value, origin=origin)
    if isinstance(value, list):
        return [_instantiate_nested(v, origin) for v in value]
    return value


def net_state_dict(ckpt: dict[str, Any], prefix: str = "net.") -> dict[str, torch.Tensor]:
    """The network's weights from a checkpoint's ``state_dict`` (``net.`` prefix removed)."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise BadCheckpointError("checkpoint has no state_dict")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], *, origin: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error on missing/unexpected/mis-shaped keys."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[0]!r}")
        raise BadCheckpointError(f"{origin}: weights do not fit {type(net).__name__}: " + ", ".join(parts)
                                 + " (checkpoint of another architecture or config?)")
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and own[key].shape != value.shape:
            raise BadCheckpointError(f"{origin}: weight {key!r} has shape {tuple(value.shape)}, "
                                     f"model expects {tuple(own[key].shape)}")
    net.load_state_dict(state, strict=True)


def load_separator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the network stored in a stemsep checkpoint and load its weights (eval mode)."""
    return load_network(path, map_location)[0].eval()


def load_network(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The network stored in a stemsep checkpoint, with its weights, and the checkpoint itself."""
    ckpt = load_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams.get("net"), dict):
        raise BadCheckpointError(f"{path}: checkpoint does not say which network it holds (no hyper_parameters.net)")
    net = build_from_config(hparams["net"], origin=str(path))
    if hparams.get("quantization"):  # written by `stemsep quantize`
        from .quantize import load_quantized

        return load_quantized(net, net_state_dict(ckpt), hparams["quantization"], origin=str(path)), ckpt
    load_weights(net, net_state_dict(ckpt), origin=str(path))
    return net, ckpt


def save_checkpoint(path: str | os.PathLike, net: nn.Module, net_config: dict[str, Any],
                    extra_hparams: dict[str, Any] | None = None) -> Path:
    """Write a stemsep checkpoint for ``net`` atomically (used by import-demucs, bag, quantize)."""
    payload = {
        # Tensors, and the (int8 weight, bias) tuples / dtypes of quantized layers as they are.
        "state_dict": {f"net.{k}": v.detach().cpu() if isinstance(v, torch.Tensor) else v
                       for k, v in net.state_dict().items()},
        "hyper_parameters": {"net": net_config, **(extra_hparams or {})},
        "stemsep": describe_net(net),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def describe_net(net: nn.Module) -> dict[str, Any]:
    """The separation contract of ``net``: sources, sample rate, channels."""
    return {
        "version": __version__,
        "sources": list(getattr(net, "sources", [])),
        "samplerate": int(getattr(net, "samplerate", 44100)),
        "audio_channels": int(getattr(net, "audio_channels", 2)),
    }
