"""A network's weights inside a checkpoint: taking them out and loading them strictly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stemsep.errors import BadCheckpointError


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
