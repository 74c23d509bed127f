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

import contextlib
import importlib
import io
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stemsep import __version__
from stemsep.contract import describe
from stemsep.errors import BadCheckpointError
from stemsep.io.files import atomic_path
from stemsep.io.quantized import load_quantized
from stemsep.io.remote import local_copy, name_of
from stemsep.io.weights import load_weights, net_state_dict

# Plain types a checkpoint may hold besides tensors and containers.
SAFE_GLOBALS = [Fraction]
REFUSED = "refused, it holds pickled code or objects, not only weights"


# Readers of other names for a checkpoint (a reference -> its local file, or None): the model registry
# (stemsep.io.pretrained, loaded with stemsep.io) plugs in pretrained model names. A hook rather than an
# import: the registry converts with the importers, which use this module.
_NAME_RESOLVERS: list[Callable[[str | os.PathLike], Path | None]] = []


def add_name_resolver(resolver: Callable[[str | os.PathLike], Path | None]) -> None:
    """Let :func:`open_checkpoint` read references that ``resolver`` turns into a local file."""
    if resolver not in _NAME_RESOLVERS:
        _NAME_RESOLVERS.append(resolver)


def open_checkpoint(path: str | os.PathLike, what: str = "checkpoint", *, by_name: bool = True):
    """``with open_checkpoint(path) as file:`` a local file holding the checkpoint ``path`` names: a
    local path as it is, a URL (:func:`~stemsep.io.remote.is_url`: ``http(s)://``, ``s3://``, ...)
    read through :mod:`stemsep.io.remote` (its timeouts, retries, resuming, size/ETag checks) into a
    temporary file; a URL that cannot be read is a one-line :class:`BadCheckpointError` naming it
    (a missing one: ``<url>: <what> not found (HTTP 404)``). With ``by_name`` (not for the importers,
    which read other projects' files), a pretrained model's name (``htdemucs``, ``stemsep models
    list``) gives its converted checkpoint in the model cache, fetched on first use."""
    for resolve in _NAME_RESOLVERS if by_name else ():
        found = resolve(path)
        if found is not None:
            return contextlib.nullcontext(found)
    return local_copy(path, error=BadCheckpointError, missing=f"{what} not found")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True``: refuses any pickled code, names the file.

    ``path`` may be a URL (``https://host/model.ckpt``, ``s3://bucket/run/last.ckpt``, ...): read
    through :func:`open_checkpoint`, then the same rules apply.
    """
    with open_checkpoint(path) as source:
        path = name_of(path)
        if not source.is_file():
            bare = _NAME_RESOLVERS and "/" not in str(path) and os.sep not in str(path)  # could have been a name
            raise BadCheckpointError(f"{path}: checkpoint not found"
                                     + (" (nor a released model's name: `stemsep models list`)" if bare else ""))
        return _load_checkpoint(path, source, map_location)


def _load_checkpoint(path: str | Path, source: Path, map_location: str | torch.device) -> dict[str, Any]:
    hint = _torchscript_hint(_peek(source)[2])
    if hint:  # before torch.load, which would warn and hand it to torch.jit.load
        raise BadCheckpointError(f"{path}: {hint}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # a pickle torch.save did not write: the error below says so, in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        raise BadCheckpointError(f"{path}: {why_unloadable(source, str(err), type(err).__name__)}") from None
    if not isinstance(ckpt, dict):
        raise BadCheckpointError(f"{path}: not a stemsep checkpoint (top level is {type(ckpt).__name__})")
    return ckpt


# What torch.save writes: a zip archive holding ``<name>/data.pkl``, or (before PyTorch 1.6, or
# ``_use_new_zipfile_serialization=False``) a pickle stream starting with torch's magic number.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def why_unloadable(source: str | os.PathLike | io.BytesIO, error_text: str, error_type: str = "Error") -> str:
    """Why a weights-only ``torch.load`` of ``source`` failed, for a one-line error (without the path).

    Looks at the file itself rather than trusting the error, which is much the same for random
    bytes and for pickled objects: an empty file, bytes that are not a torch file at all (neither a
    zip archive nor a pickle), a zip archive or legacy torch file cut short, a TorchScript archive
    (hint: ``--backend torchscript``), and only then — a torch file whose pickle references code or
    objects — :data:`REFUSED`.
    """
    head, zipped, names = _peek(source)
    first = error_text.strip().splitlines()[0] if error_text.strip() else error_type
    suffix = "" if isinstance(source, io.BytesIO) else Path(source).suffix.lower()
    if not head:
        return "is empty (0 bytes), not a PyTorch checkpoint"
    if zipped:
        hint = _torchscript_hint(names)
        if hint:
            return hint
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "is not a PyTorch checkpoint (a zip archive without the data.pkl torch.save writes)"
        if "Unsupported global" in error_text or "Weights only load failed" in error_text:
            return REFUSED
        return f"is truncated or corrupt (a damaged torch zip archive: {first})"
    if head.startswith(_ZIP_MAGIC):
        return "is truncated or corrupt (a zip archive whose end is missing: copy or download it again)"
    if head.startswith(_LEGACY_MAGIC[:len(head)]):
        if "Unsupported global" in error_text:
            return REFUSED
        return f"is truncated or corrupt (a legacy torch.save file that cannot be read to its end: {first})"
    if "Unsupported global" in error_text:
        return REFUSED
    if suffix == ".onnx":
        return "is not a PyTorch checkpoint (an ONNX export? run it with --backend onnxruntime)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "is not a PyTorch checkpoint (a Python pickle that torch.save did not write)"
    return "is not a PyTorch checkpoint (neither the zip archive nor the pickle torch.save writes)"


def _torchscript_hint(names: list[str]) -> str | None:
    """The message for a TorchScript archive (``torch.jit.save``: ``code/`` and ``constants.pkl``
    entries) given where a checkpoint is expected, or None when ``names`` are not one."""
    if not any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return None
    if any(n.endswith("/extra/stemsep.json") for n in names):  # written by `stemsep export`
        return "is a TorchScript export, not a checkpoint: run it with --backend torchscript " \
               "(Python: backend=\"torchscript\")"
    return "is a TorchScript export, not a checkpoint: --backend torchscript runs `stemsep export` files; " \
           "pass the model's stemsep checkpoint"


def _peek(source: str | os.PathLike | io.BytesIO) -> tuple[bytes, bool, list[str]]:
    """The first bytes of ``source``, whether it is a readable zip archive, and its entry names."""
    try:
        if isinstance(source, io.BytesIO):
            head = source.getvalue()[:16]
        else:
            with open(source, "rb") as handle:
                head = handle.read(16)
    except OSError:
        return b"", False, []
    try:
        with zipfile.ZipFile(source) as archive:
            return head, True, archive.namelist()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return head, False, []
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)  # torch.load reads a buffer from where it stands


def refused_globals(path: str | os.PathLike, error_text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The globals a torch file references outside ``allowed`` (scanned in the zip archive, never
    executed; for legacy non-zip files the one torch's error names), or ``None``: for a one-line
    error saying why a weights-only load refused a file."""
    try:
        if zipfile.is_zipfile(path):
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
            if unsafe:
                return ", ".join(sorted(unsafe))
    except Exception:  # noqa: BLE001 - a corrupt archive: fall back to torch's message
        pass
    match = re.search(r"GLOBAL (\S+)", error_text)
    return match.group(1) if match else None


# Class paths that older stemsep versions wrote into checkpoints and configs -> where they live now.
RENAMED_CLASSES = {
    "stemsep.models.bag.BagOfModels": "stemsep.inference.bag.BagOfModels",
    "stemsep.models.FromCheckpoint": "stemsep.io.FromCheckpoint",
    "stemsep.models.from_checkpoint.FromCheckpoint": "stemsep.io.FromCheckpoint",
}


def import_class(class_path: str, *, base: type = nn.Module, origin: str = "config") -> type:
    """Import ``pkg.mod.Class`` (a class path a checkpoint or config names, data rather than code
    this package depends on) and check it subclasses ``base``."""
    class_path = RENAMED_CLASSES.get(class_path, class_path)
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


def load_separator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the network stored in a stemsep checkpoint and load its weights (eval mode)."""
    return load_network(path, map_location)[0].eval()


def load_network(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The network stored in a stemsep checkpoint, with its weights, and the checkpoint itself."""
    ckpt = load_checkpoint(path, map_location)
    if "stemsep_lora" in ckpt:  # written by a run with model.lora (stemsep.training.lora)
        raise BadCheckpointError(f"{path}: holds LoRA adapters only, not a whole network; merge them into their "
                                 f"base first: stemsep merge-lora {Path(path).name} -o merged.ckpt")
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams.get("net"), dict):
        raise BadCheckpointError(f"{path}: checkpoint does not say which network it holds (no hyper_parameters.net)")
    net = build_from_config(hparams["net"], origin=str(path))
    if hparams.get("quantization"):  # written by `stemsep quantize`
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
        "stemsep": {"version": __version__, **describe(net)},
    }
    # through a file object: torch names the archive's top folder after a path's stem, here the
    # random temporary name; the same network then gives the same bytes (a LoRA base's sha256)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)
    return Path(path)


class FromCheckpoint(nn.Module):
    """A network config that means "the network stored in this stemsep checkpoint".

    LightningCLI builds ``model.net`` from a ``class_path``; this one loads whatever a stemsep
    checkpoint holds (a trained model, an imported demucs model, a bag from ``stemsep bag``)
    with its weights, so any of them can be evaluated or fine-tuned from a config::

        stemsep test --config recipes/eval.yaml \\
            --model.net stemsep.io.FromCheckpoint --model.net.checkpoint ft.ckpt

    ``FromCheckpoint(checkpoint=...)`` returns the stored network itself (e.g. a bag, so
    chunked inference still applies each member with its own segment), not a wrapper:
    parameter names and behaviour are exactly those of the stored model (train mode).
    """

    def __new__(cls, checkpoint: str | os.PathLike):  # noqa: D102 - documented on the class
        net, _ = load_network(checkpoint)
        return net.train()

    def __init__(self, checkpoint: str | os.PathLike):  # pragma: no cover - __new__ returns another class
        super().__init__()
