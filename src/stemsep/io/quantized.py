"""The int8 checkpoint format of ``stemsep quantize``: dynamic int8 quantization of a checkpoint's Linear layers (CPU inference).

    stemsep quantize model.ckpt -o model-int8.ckpt
    stemsep separate song.wav --model model-int8.ckpt --device cpu -o separated/

``torch.ao.quantization.quantize_dynamic`` replaces every ``nn.Linear`` (the transformer's
feed-forward layers, the attention output projections, the separate q/k/v projections of sparse
layouts, BiLSTM projections) by an int8 version: weights stored as int8 with one scale per
tensor, activations quantized on the fly. Convolutions, normalisations, LSTMs and the packed
``in_proj_weight`` of the fused attention layout stay float32 (quantize_dynamic has no int8
kernel for them), so the gain grows with the share of Linear weights in the model.

The output is a stemsep checkpoint like any other, still loadable with ``weights_only=True``
(quantized tensors and their packed parameters are plain tensors and tuples to the loader), with
``hyper_parameters.quantization`` telling :func:`stemsep.io.checkpoint.load_separator` to quantize
the freshly built float network the same way before loading the int8 weights. Quantized
layers run on the CPU only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.weights import load_weights

SCHEME = {"method": "dynamic", "dtype": "qint8", "modules": ["Linear"]}


def quantize_net(net: nn.Module) -> nn.Module:
    """An int8 dynamic-quantized copy of ``net`` (eval mode; ``net`` itself is unchanged)."""
    if not any(isinstance(m, nn.Linear) for m in net.modules()):
        raise StemsepError(f"{type(net).__name__} has no Linear layer to quantize")
    return torch.ao.quantization.quantize_dynamic(net.eval(), {nn.Linear}, dtype=torch.qint8, inplace=False)


def is_quantized(net: nn.Module) -> bool:
    """Whether ``net`` holds dynamic int8 layers (they run on the CPU only)."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in net.modules())


def load_quantized(net: nn.Module, state: dict[str, Any], scheme: dict[str, Any], origin: str) -> nn.Module:
    """Quantize the float ``net`` as ``scheme`` says, then load the stored int8 ``state`` into it."""
    if scheme != SCHEME:
        raise BadCheckpointError(f"{origin}: unsupported quantization {scheme!r} (this stemsep knows {SCHEME!r})")
    quantized = quantize_net(net)
    # Quantized layers read their serialisation version from the state's metadata, which a
    # checkpoint's plain dict does not keep: they are the versions of this very layout.
    state = OrderedDict(state)
    state._metadata = quantized.state_dict()._metadata  # type: ignore[attr-defined]
    load_weights(quantized, state, origin=origin)
    return quantized
