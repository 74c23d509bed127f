"""The int8 checkpoint format of ``stemsep quantize``: dynamic int8 quantization of a checkpoint's Linear and recurrent layers (CPU inference).

    stemsep quantize model.ckpt -o model-int8.ckpt
    stemsep separate song.wav --model model-int8.ckpt --device cpu -o separated/

``torch.ao.quantization.quantize_dynamic`` replaces every ``nn.Linear`` (the transformer's
feed-forward layers, the attention output projections, the separate q/k/v projections of sparse
layouts, BiLSTM projections) and every ``nn.LSTM`` / ``nn.GRU`` (HS-TasNet's recurrent memory,
Demucs' BiLSTMs) by an int8 version: weights stored as int8 with one scale per tensor, activations
quantized on the fly. Convolutions, normalisations and the packed ``in_proj_weight`` of the fused
attention layout stay float32 (quantize_dynamic has no int8 kernel for them), so the gain grows
with the share of Linear and recurrent weights in the model.

The output is a stemsep checkpoint like any other, still loadable with ``weights_only=True``:
quantized Linear layers store plain (int8 weight, bias) tuples; quantized LSTMs / GRUs, whose
own ``state_dict`` holds packed TorchScript objects the safe loader refuses, are stored as their
int8 weights and float biases under the float layer's names (``weight_ih_l0``, ``bias_ih_l0``,
...; :func:`_store_recurrent` / :func:`_load_recurrent`). ``hyper_parameters.quantization`` tells
:func:`stemsep.io.checkpoint.load_separator` to quantize the freshly built float network the same
way before loading the int8 weights; checkpoints of the earlier Linear-only scheme still load.
Quantized layers run on the CPU only.

Dynamic quantization picks one activation scale per input tensor: over a whole sequence, a frame's
output would depend on the loudness of frames after it. A network that declares the causal
streaming contract (:func:`~stemsep.contract.stream_step_of`, HS-TasNet) is therefore quantized
with activations **per frame** (``"activations": "per-frame"`` in its scheme): its int8 Linear
layers quantize each row (one frame of one stream) alone, its int8 LSTMs / GRUs step frame by
frame and stream by stream, exactly as ``stream_step`` runs them, so the int8 network stays causal
and its streamed output equals its offline output; its unpadded ``Conv1d`` layers (HS-TasNet's
TasNet encoder, a frame wide, and its 1x1 projection: 6.9 M of the paper size's 50.2 M weights) are
int8 too, each input window a row (:class:`FrameConv1dInt8`, stored as a Linear's tuple). The offline forward pays with one call per
frame; a streamed step (one frame of one stream) takes the layers' own path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from stemsep.contract import stream_step_of
from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.weights import load_weights

SCHEME = {"method": "dynamic", "dtype": "qint8", "modules": ["Linear", "LSTM", "GRU"]}
# causal networks (see above): their framing convolutions too
FRAME_SCHEME = {**SCHEME, "modules": [*SCHEME["modules"], "Conv1d"], "activations": "per-frame"}
# every scheme this stemsep loads: the current two, and the Linear-only one written before
SCHEMES = (SCHEME, FRAME_SCHEME, {**SCHEME, "modules": ["Linear"]})
FLOAT_MODULES = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU, "Conv1d": nn.Conv1d}
QUANTIZED_MODULES = (qdynamic.Linear, qdynamic.LSTM, qdynamic.GRU)  # FrameConv1dInt8 is a Linear
PACKED = "_all_weight_values."  # where a quantized RNN's state_dict keeps its packed layers


def scheme_for(net: nn.Module) -> dict[str, Any]:
    """The scheme ``stemsep quantize`` applies to ``net``: per-frame activations for a causal network."""
    return dict(FRAME_SCHEME if stream_step_of(net) is not None else SCHEME)


def quantize_net(net: nn.Module, scheme: dict[str, Any] | None = None) -> nn.Module:
    """An int8 dynamic-quantized copy of ``net`` (eval mode; ``net`` itself is unchanged), as
    ``scheme`` says (None: :func:`scheme_for` ``net``). Quantize the plain network: layers are found
    by exact type, so those already swapped by ``optimize_for_cpu`` would stay float (apply it after)."""
    scheme = scheme_for(net) if scheme is None else scheme
    kinds = {FLOAT_MODULES[name] for name in scheme["modules"]}
    if not any(isinstance(m, tuple(kinds)) for m in net.modules()):
        raise StemsepError(f"{type(net).__name__} has no {' or '.join(scheme['modules'])} layer to quantize")
    quantized = torch.ao.quantization.quantize_dynamic(net.eval(), kinds - {nn.Conv1d}, dtype=torch.qint8,
                                                       inplace=False)
    if nn.Conv1d in kinds:
        _quantize_frame_convs(quantized)
    per_frame = scheme.get("activations") == "per-frame"
    for module in quantized.modules():
        if isinstance(module, (qdynamic.LSTM, qdynamic.GRU)):
            module.register_state_dict_post_hook(_store_recurrent)
            module.register_load_state_dict_pre_hook(_load_recurrent)
        if per_frame and type(module) in PER_FRAME and not getattr(module, "bidirectional", False):
            module.__class__ = PER_FRAME[type(module)]
    return quantized


def _store_recurrent(module: qdynamic.LSTM | qdynamic.GRU, state: dict, prefix: str, metadata: dict) -> None:
    """State-dict hook: a quantized RNN's packed layers as plain tensors (int8 weights, float biases)."""
    for key in [key for key in state if key.startswith(prefix + PACKED)]:
        del state[key]
    unpacked = module._weight_bias()
    for name, value in {**unpacked["weight"], **unpacked["bias"]}.items():
        state[prefix + name] = value


def _load_recurrent(module: qdynamic.LSTM | qdynamic.GRU, state: dict, prefix: str, metadata: dict, strict: bool,
                    missing: list, unexpected: list, errors: list) -> None:
    """Load pre-hook: pack the stored plain tensors into the RNN, in place of the packed entries
    its own loading reads (so strict loading sees exactly its keys)."""
    names = [name for name in module.state_dict() if not name.startswith(PACKED)]
    if any(prefix + name not in state for name in names):
        return  # strict loading reports the missing keys
    module.set_weight_bias({name: state.pop(prefix + name) for name in names})
    for index, packed in enumerate(module._all_weight_values):
        state[f"{prefix}{PACKED}{index}.param"] = packed.param


class FrameLinear(qdynamic.Linear):
    """Int8 ``Linear`` quantizing each row of its input (one frame of one stream) alone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, step = x.reshape(-1, 1, x.shape[-1]), super().forward
        if rows.shape[0] == 1:
            return step(x)
        return torch.cat([step(row) for row in rows]).reshape(*x.shape[:-1], -1)


class FrameConv1dInt8(FrameLinear):
    """Int8 ``Conv1d`` without padding, dilation or groups: each input window (one frame: channels x
    kernel samples) goes through the int8 product alone, as :class:`FrameLinear` rows."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__(in_channels * kernel_size, out_channels)
        self.kernel_size, self.stride = kernel_size, stride

    @staticmethod
    def takes(conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv1d and conv.padding == (0,) and conv.dilation == (1,) and conv.groups == 1
                and conv.padding_mode == "zeros")

    @classmethod
    def from_float(cls, conv: nn.Conv1d) -> FrameConv1dInt8:
        """The int8 version of ``conv``: its weight rounded as ``quantize_dynamic`` rounds a Linear's."""
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0])
        weight = conv.weight.detach().flatten(1).float()
        observer = torch.ao.quantization.default_dynamic_qconfig.weight()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        qweight = torch.quantize_per_tensor(weight, float(scale), int(zero_point), torch.qint8)
        module.set_weight_bias(qweight, None if conv.bias is None else conv.bias.detach().float())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, out_channels, frames)``."""
        frames = x.unfold(-1, self.kernel_size, self.stride).transpose(1, 2).flatten(2)  # (B, frames, C * kernel)
        return super().forward(frames).transpose(1, 2)


def _quantize_frame_convs(net: nn.Module) -> None:
    """Replace (in place) every plain ``Conv1d`` of ``net`` that :class:`FrameConv1dInt8` takes."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if FrameConv1dInt8.takes(child):
                setattr(parent, name, FrameConv1dInt8.from_float(child))


class _FrameRecurrent:
    """Int8 LSTM / GRU run one frame of one stream at a time (the streamed step's own calls)."""

    def forward(self, x: torch.Tensor, hx=None):
        if not self.batch_first:  # (T, B, F): the same, transposed
            out, hx = self._batch_first(x.transpose(0, 1), hx)
            return out.transpose(0, 1), hx
        return self._batch_first(x, hx)

    def _batch_first(self, x: torch.Tensor, hx):
        step = super().forward  # the quantized layer's own forward
        if x.shape[0] == 1 and x.shape[1] == 1:
            return step(x, hx)
        outs, states = [], []
        for item in range(x.shape[0]):
            state = None if hx is None else _select(hx, item)
            frames = []
            for frame in x[item:item + 1].split(1, dim=1):
                out, state = step(frame, state)
                frames.append(out)
            outs.append(torch.cat(frames, 1))
            states.append(state)
        return torch.cat(outs), _join(states)


def _select(hx, item: int):
    """Stream ``item``'s recurrent state (a tensor, or an LSTM's pair), batch on axis 1."""
    return tuple(h[:, item:item + 1] for h in hx) if isinstance(hx, tuple) else hx[:, item:item + 1]


def _join(states: list):
    return tuple(torch.cat(parts, 1) for parts in zip(*states)) if isinstance(states[0], tuple) \
        else torch.cat(states, 1)


class FrameLSTM(_FrameRecurrent, qdynamic.LSTM):
    pass


class FrameGRU(_FrameRecurrent, qdynamic.GRU):
    pass


PER_FRAME = {qdynamic.Linear: FrameLinear, qdynamic.LSTM: FrameLSTM, qdynamic.GRU: FrameGRU}


def is_quantized(net: nn.Module) -> bool:
    """Whether ``net`` holds dynamic int8 layers (they run on the CPU only)."""
    return any(isinstance(m, QUANTIZED_MODULES) for m in net.modules())


def load_quantized(net: nn.Module, state: dict[str, Any], scheme: dict[str, Any], origin: str) -> nn.Module:
    """Quantize the float ``net`` as ``scheme`` says, then load the stored int8 ``state`` into it."""
    if scheme not in SCHEMES:
        raise BadCheckpointError(f"{origin}: unsupported quantization {scheme!r} (this stemsep knows {SCHEME!r})")
    quantized = quantize_net(net, scheme)
    # Quantized layers read their serialisation version from the state's metadata, which a
    # checkpoint's plain dict does not keep: they are the versions of this very layout.
    state = OrderedDict(state)
    state._metadata = quantized.state_dict()._metadata  # type: ignore[attr-defined]
    load_weights(quantized, state, origin=origin)
    return quantized
