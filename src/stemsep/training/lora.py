"""LoRA fine-tuning of any separation network with ``peft`` (optional extra: ``pip install stemsep[lora]``).

A recipe sets ``model.lora: {r, alpha, target_modules, dropout}`` and ``model.init_from`` (the
base checkpoint). :class:`~stemsep.training.module.SeparationModule` then

* injects LoRA adapters into the modules of its network that ``target_modules`` names (peft's
  matching: a list of module-name suffixes, or one regular expression matched against the full
  name) and freezes everything else, so only the adapters train;
* loads the base weights from ``init_from`` (always: the adapters are meaningless without them);
* writes checkpoints that hold the adapters only (plus optimizer state etc.), with a reference to
  the base checkpoint (its path and sha256) under ``checkpoint["stemsep_lora"]``; resuming with
  ``--ckpt_path`` re-reads the base and refuses one whose sha256 differs.

:func:`merge_lora` (``stemsep merge-lora``) folds the adapters into the base weights and writes a
plain stemsep checkpoint of the base architecture, usable by every tool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stemsep.errors import BadArgumentError, BadCheckpointError, StemsepError
from stemsep.io.checkpoint import load_checkpoint, load_network, open_checkpoint, save_checkpoint
from stemsep.io.files import file_sha256
from stemsep.io.remote import is_url, name_of
from stemsep.io.weights import net_state_dict

ADAPTER = "default"  # peft's adapter name
CHECKPOINT_KEY = "stemsep_lora"


@dataclass
class LoRA:
    """LoRA settings (``model.lora`` of a recipe).

    Args:
        target_modules: the layers to adapt: module-name suffixes (``[to_qkv, to_out.0]``) or one
            regular expression matched against full module names (peft's ``target_modules``).
            Linear, Conv1d/2d and Embedding layers can be adapted.
        r: rank of the adapters.
        alpha: scale numerator: the update is ``alpha / r * B @ A``.
        dropout: dropout on the adapters' input during training.
    """

    target_modules: list[str] | str
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = [str(m) for m in self.target_modules]
        if not self.target_modules:
            raise BadArgumentError("model.lora.target_modules is empty: name the layers to adapt")
        if int(self.r) < 1:
            raise BadArgumentError(f"model.lora.r must be >= 1, got {self.r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise BadArgumentError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        self.r, self.alpha, self.dropout = int(self.r), float(self.alpha), float(self.dropout)

    @classmethod
    def of(cls, value: LoRA | dict[str, Any]) -> LoRA:
        """A ``LoRA`` from itself or from a plain dict (as stored in checkpoints); unknown keys are errors."""
        if isinstance(value, LoRA):
            return value
        if not isinstance(value, dict):
            raise BadArgumentError(f"model.lora must be a mapping of r, alpha, target_modules, dropout, "
                                   f"not {type(value).__name__}")
        known = {"target_modules", "r", "alpha", "dropout"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise BadArgumentError(f"model.lora.{unknown[0]}: unknown option (known: {', '.join(sorted(known))})")
        if "target_modules" not in value:
            raise BadArgumentError("model.lora.target_modules is missing: name the layers to adapt")
        return cls(**value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _peft():
    try:
        import peft
    except ImportError:
        raise StemsepError("LoRA needs the peft package: pip install 'stemsep[lora]'") from None
    return peft


def _peft_config(lora: LoRA):
    return _peft().LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                              lora_dropout=lora.dropout, bias="none")


def inject(net: nn.Module, lora: LoRA) -> nn.Module:
    """Add LoRA adapters to ``net`` in place and freeze all its other parameters; returns ``net``."""
    peft = _peft()
    try:
        peft.inject_adapter_in_model(_peft_config(lora), net, adapter_name=ADAPTER)
    except ValueError as err:  # e.g. "Target modules {...} not found in the base model"
        first = str(err).strip().splitlines()[0]
        raise BadArgumentError(f"model.lora.target_modules {lora.target_modules!r}: {first}") from None
    if not any(is_adapter_key(name) for name, _ in net.named_parameters()):
        raise BadArgumentError(f"model.lora.target_modules {lora.target_modules!r} matches no layer of "
                               f"{type(net).__name__}")
    return net


def is_adapter_key(name: str) -> bool:
    """Whether a parameter/state name belongs to a LoRA adapter (``...lora_A.default.weight``)."""
    return any(part.startswith("lora_") for part in name.split("."))


def base_key(name: str) -> str:
    """The name a (non-adapter) weight has in the network without adapters."""
    return ".".join(part for part in name.split(".") if part != "base_layer")


def adapter_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if is_adapter_key(k)}


def load_base_weights(net: nn.Module, state: dict[str, torch.Tensor], *, origin: str) -> None:
    """Load the weights of the plain network (``state``) into ``net`` carrying adapters; adapters stay as they are."""
    own = net.state_dict()
    mapped = {k: state.get(base_key(k)) for k in own if not is_adapter_key(k)}
    missing = sorted(base_key(k) for k, v in mapped.items() if v is None)
    unexpected = sorted(set(state) - {base_key(k) for k in mapped})
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise BadCheckpointError(f"{origin}: base weights do not fit {type(net).__name__} ({what}; "
                                 f"{len(missing)} missing, {len(unexpected)} unexpected)")
    for key, value in mapped.items():
        if value.shape != own[key].shape:
            raise BadCheckpointError(f"{origin}: weight {base_key(key)!r} has shape {tuple(value.shape)}, "
                                     f"model expects {tuple(own[key].shape)}")
    result = net.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and all(is_adapter_key(k) for k in result.missing_keys)


@contextlib.contextmanager
def open_base(path: str | os.PathLike) -> Iterator[tuple[dict[str, str], Path]]:
    """``(reference, local file)`` of a LoRA base, read once (a URL through
    :func:`~stemsep.io.checkpoint.open_checkpoint`, its copy removed on exit): the reference is how a
    LoRA checkpoint names its base — the path as given, resolved (a URL: as given), the file's sha256."""
    with open_checkpoint(path, "base checkpoint") as file:
        if not file.is_file():
            raise BadCheckpointError(f"{name_of(path)}: base checkpoint not found")
        yield {"path": str(path), "resolved": str(path) if is_url(path) else str(file.resolve()),
               "sha256": file_sha256(file)}, file


def base_reference(path: str | os.PathLike) -> dict[str, str]:
    """The reference of :func:`open_base` alone."""
    with open_base(path) as (reference, _):
        return reference


def check_base(reference: dict[str, Any], path: str | os.PathLike, sha256: str, *, origin: str) -> None:
    """One-line error unless the base at ``path`` (hash ``sha256``) is the one the adapters were trained on."""
    if reference.get("sha256") != sha256:
        raise BadCheckpointError(f"{origin}: its adapters were trained on base {reference.get('path')} "
                                 f"(sha256 {str(reference.get('sha256'))[:12]}...), but {path} has sha256 "
                                 f"{sha256[:12]}...; give the same base checkpoint")


def merge(net: nn.Module) -> nn.Module:
    """``net`` carrying adapters -> the plain network, ``W + alpha / r * B @ A`` in each adapted layer (in place)."""
    layer_type = _peft().tuners.tuners_utils.BaseTunerLayer
    adapted = [(name, module) for name, module in net.named_modules() if isinstance(module, layer_type)]
    for name, module in adapted:
        module.merge(adapter_names=[ADAPTER])  # peft's own update rule for each layer type
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, child, module.get_base_layer())
    if hasattr(net, "peft_config"):
        del net.peft_config
    return net


def read_adapters(path: str | os.PathLike) -> tuple[dict[str, Any], LoRA, dict[str, torch.Tensor], dict[str, Any]]:
    """A LoRA checkpoint: (its base reference, settings, adapter weights, network config)."""
    ckpt = load_checkpoint(path)
    info = ckpt.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or not isinstance(info.get("base"), dict):
        raise BadCheckpointError(f"{path}: not a LoRA checkpoint (no '{CHECKPOINT_KEY}' entry; written by "
                                 "a run with model.lora)")
    adapters = {k: v for k, v in net_state_dict(ckpt).items() if is_adapter_key(k)}
    if not adapters:
        raise BadCheckpointError(f"{path}: holds no adapter weights")
    return info["base"], LoRA.of(info["lora"]), adapters, ckpt


def merge_lora(adapters: str | os.PathLike, dst: str | os.PathLike, *, base: str | os.PathLike | None = None,
               force: bool = False) -> dict[str, Any]:
    """``stemsep merge-lora``: fold the adapters of a LoRA checkpoint into its base and write a plain stemsep checkpoint.

    ``base``: the base checkpoint (default: the path the LoRA checkpoint names, as given, else
    resolved); its sha256 must be the recorded one. ``force``: overwrite ``dst``. Returns a summary.
    """
    dst = Path(dst)
    if dst.exists() and not force:
        raise StemsepError(f"{dst}: already exists (use --force to overwrite)")
    reference, lora, adapter_weights, _ = read_adapters(adapters)
    if base is None:
        candidates = [reference.get("path"), reference.get("resolved")]
        base = next((c for c in candidates if c and (is_url(c) or Path(c).is_file())), None)
        if base is None:
            raise BadCheckpointError(f"{adapters}: its base checkpoint {reference.get('path')} is not found; "
                                     "give it with --base")
    with open_base(base) as (found, file):
        check_base(reference, base, found["sha256"], origin=str(adapters))
        net, base_ckpt = load_network(file)
    inject(net, lora)
    own = adapter_state_dict(net)
    if set(own) != set(adapter_weights):
        extra = sorted(set(adapter_weights) ^ set(own))
        raise BadCheckpointError(f"{adapters}: adapter weights do not fit the base network ({extra[0]!r})")
    net.load_state_dict(adapter_weights, strict=False)
    merged = merge(net).eval()
    if set(merged.state_dict()) != set(net_state_dict(base_ckpt)):  # the base's names again, no adapter left
        raise StemsepError(f"{adapters}: merging left a network whose weights differ in names from the base")
    hparams = base_ckpt.get("hyper_parameters") or {}
    provenance = {"adapters": Path(adapters).name, "base": reference, "lora": lora.as_dict()}
    save_checkpoint(dst, merged, hparams["net"], {"merged_lora": provenance})
    return {"base": str(base), "parameters": sum(p.numel() for p in merged.parameters()),
            "adapter_parameters": sum(v.numel() for v in adapter_weights.values()), "sources": list(merged.sources)}
