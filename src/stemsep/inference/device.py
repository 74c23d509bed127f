"""Which device inference runs on: ``--device`` (``stemsep separate``) and ``Separator(device=...)``.

:func:`resolve_device` is the one place a device name is parsed and checked, so an unknown name or
a GPU that is not there is a one-line :class:`~stemsep.errors.BadArgumentError`, not a traceback
from the first tensor moved there.
"""

from __future__ import annotations

import torch

from stemsep.errors import BadArgumentError

DEVICES = ("cpu", "cuda", "cuda:N", "mps")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` as a :class:`torch.device` that exists here; ``None`` (or ``"auto"``): cuda when
    available, else cpu. Valid names: cpu, cuda, cuda:N (N < the number of visible GPUs), mps."""
    if name is None or (isinstance(name, str) and name.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(name).strip()
    choose = f"choose {', '.join(DEVICES)}"
    try:
        device = torch.device(text.lower()) if isinstance(name, str) else torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise BadArgumentError(f"--device {text}: unknown device ({choose})") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadArgumentError(f"--device {text}: no CUDA GPU is visible (torch.cuda.is_available() is False); "
                                   "use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadArgumentError(f"--device {text}: only {count} CUDA GPU(s) visible "
                                   f"(cuda:0 to cuda:{count - 1}); use --device cuda or --device cpu")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise BadArgumentError(f"--device {text}: no Apple GPU (MPS) is available "
                                   "(torch.backends.mps.is_available() is False); use --device cpu")
        return device
    raise BadArgumentError(f"--device {text}: not a device stemsep separates on ({choose})")
