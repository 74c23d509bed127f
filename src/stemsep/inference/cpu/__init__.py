"""CPU inference rewrites, applied after loading: :func:`optimize_for_cpu`.

The model classes in :mod:`stemsep.models` are the plain reference structure. On CPU, oneDNN
runs some of their shapes slowly, so for separation (``stemsep separate``, ``stemsep test``, the
Python API, the benchmarks) :func:`optimize_for_cpu` swaps, in place, the classes of
submodules for subclasses computing the same values faster (same parameters, same
``state_dict``):

* encoder/decoder layers hand 2D convolutions channels-last inputs (1.3-3x faster in oneDNN);
* DConv squeeze convolutions run by taps (:class:`~stemsep.inference.cpu.tapconv.TapConv1d`), the
  1x1 expansions as batched products (:class:`~stemsep.inference.cpu.pointwise.PointwiseConv1d`),
  and each sub-block's tail fused into one product (:class:`~stemsep.inference.cpu.dconv.FusedDConv`);
* HS-TasNet, streamed one frame per hop, steps its LSTMs / GRUs by their cell functions
  (:mod:`~stemsep.inference.cpu.recurrent`; oneDNN's RNN repacks the weights on every call) and
  runs its TasNet encoder and decoder on the frame as matrix products
  (:mod:`~stemsep.inference.cpu.framing`).

Each rewritten module takes its fast path only for float32 CPU tensors in eager mode, without
autograd recording, autocast, tracing or export; otherwise it computes exactly what the plain
module does, so an optimized network stays correct on any device. Training and export use the
plain classes: nothing here is imported by them. :func:`restore_plain` undoes the swap.
"""

from __future__ import annotations

from torch import nn

from stemsep.inference.cpu.dconv import FusedDConv, foldable_tail
from stemsep.inference.cpu.framing import FrameConv1d, FrameDecoder
from stemsep.inference.cpu.layers import CpuDecoderLayer, CpuEncoderLayer
from stemsep.inference.cpu.pointwise import PointwiseConv1d
from stemsep.inference.cpu.recurrent import RECURRENT
from stemsep.inference.cpu.tapconv import TapConv1d
from stemsep.models.dconv import DConv
from stemsep.models.hstasnet import HSTasNet, WindowedDecoder
from stemsep.models.layers import DecoderLayer, EncoderLayer

# plain class -> its CPU inference subclass (same attributes, another forward)
LAYERS = {EncoderLayer: CpuEncoderLayer, DecoderLayer: CpuDecoderLayer}
REWRITES = (*LAYERS.values(), FusedDConv, TapConv1d, PointwiseConv1d, *RECURRENT.values(), FrameConv1d, FrameDecoder)


def optimize_for_cpu(net: nn.Module) -> nn.Module:
    """Swap in the CPU inference modules (in place; same weights and ``state_dict``); returns ``net``.

    Hybrid (Transformer) Demucs networks and HS-TasNet, alone or in a bag, get their rewrites; any
    other network is returned unchanged. Call it on a network used for inference only. Targets are
    found by their exact type over ``net.modules()`` (a subclass with a forward of its own is left
    alone), never by position; in a DConv sub-block, the squeeze and the 1x1 expansion are its
    first and last ``nn.Conv1d`` children.
    """
    for module in net.modules():
        if type(module) in LAYERS:
            module.__class__ = LAYERS[type(module)]
        elif type(module) is DConv:
            _optimize_dconv(module)
        elif type(module) is HSTasNet:
            _optimize_hstasnet(module)
    return net


def restore_plain(net: nn.Module) -> nn.Module:
    """Undo :func:`optimize_for_cpu` (in place); returns ``net``."""
    for module in net.modules():
        if type(module) in REWRITES:
            module.__class__ = type(module).__mro__[1]
    return net


def _optimize_dconv(dconv: DConv) -> None:
    for layer in dconv.layers:
        # A sub-block's plain 1D convolutions are its squeeze (first) and its 1x1 expansion (last);
        # BLSTM and LocalState are other types, whatever their place.
        convs = [module for module in layer if type(module) is nn.Conv1d]
        if len(convs) != 2:
            continue
        squeeze, expand = convs
        if TapConv1d.takes(squeeze):
            squeeze.__class__ = TapConv1d
        if PointwiseConv1d.takes(expand):
            expand.__class__ = PointwiseConv1d
    if all(foldable_tail(layer) for layer in dconv.layers):
        dconv.__class__ = FusedDConv


def _optimize_hstasnet(net: HSTasNet) -> None:
    """Its plain LSTMs / GRUs (a user's ``rnn_klass`` is left alone), encoder and decoder."""
    for module in net.modules():
        if type(module) in RECURRENT:
            module.__class__ = RECURRENT[type(module)]
    if type(net.conv_encode) is nn.Conv1d and FrameConv1d.takes(net.conv_encode):
        net.conv_encode.__class__ = FrameConv1d
    if type(net.conv_decode) is WindowedDecoder and FrameDecoder.takes(net.conv_decode):
        net.conv_decode.__class__ = FrameDecoder
