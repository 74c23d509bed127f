"""``stemsep quantize`` as a library function: a float checkpoint in, an int8 checkpoint out.

    stemsep quantize model.ckpt -o model-int8.ckpt

The format and what it quantizes: :mod:`stemsep.io.quantized`.
"""

from __future__ import annotations

from pathlib import Path

from stemsep.errors import StemsepError
from stemsep.io.checkpoint import load_network, save_checkpoint
from stemsep.io.quantized import quantize_net, scheme_for


def quantize_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``out``: the int8 dynamic-quantized version of the float stemsep ``checkpoint``."""
    out = Path(out)
    net, ckpt = load_network(checkpoint)  # a path, a URL or a released model's name: not through Path
    hparams = ckpt.get("hyper_parameters") or {}
    if hparams.get("quantization"):
        raise StemsepError(f"{checkpoint}: already quantized")
    scheme = scheme_for(net)
    return save_checkpoint(out, quantize_net(net, scheme), hparams["net"], {"quantization": scheme})
