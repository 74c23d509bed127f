"""``stemsep export``: write a checkpoint's network as ONNX or TorchScript for use outside stemsep training.

    stemsep export model.ckpt --format onnx -o model.onnx
    stemsep separate song.wav --model model.onnx --backend onnxruntime -o separated/

Only the real-valued core of a spectral network is exported: ONNX cannot express the inverse
STFT and handles complex tensors poorly, so STFT, masking, ISTFT and chunking stay in the thin
wrapper documented in :mod:`stemsep.inference.exported`. A network says how it splits by the
optional contract method ``export_parts()`` (:class:`stemsep.contract.ExportParts`: the core
module, its front end, input and output names); Hybrid (Transformer) Demucs
(:meth:`stemsep.models.hybrid.HybridBase.core`), BS-RoFormer and Mel-Band RoFormer
(:meth:`stemsep.models.roformer.RoFormerBase.core`) and SCNet implement it. The graph has a
dynamic batch axis and a fixed segment length: HT Demucs' training segment, or ``--segment``
seconds for the others (default their ``segment``). Attention is exported with the exact
``dense`` kernel. ONNX export uses the ``torch.export`` based exporter (needs
``onnx``/``onnxscript``: ``pip install 'stemsep[export]'``); TorchScript export traces the same
core. Bags and networks without ``export_parts`` have no export path.
:func:`export_checkpoint` is the command as a library function.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from stemsep.contract import ExportParts, bag_members, export_parts, uses_train_segment
from stemsep.errors import StemsepError
from stemsep.inference.chunked import Chunking
from stemsep.inference.exported import METADATA_KEY, TORCHSCRIPT_EXTRA
from stemsep.io.checkpoint import load_separator
from stemsep.io.files import atomic_path
from stemsep.io.quantized import is_quantized
from stemsep.models.htdemucs import HTDemucs
from stemsep.models.spectral import FrontEnd

FORMATS = ("onnx", "torchscript")


class ExportError(StemsepError):
    """A model or option that ``stemsep export`` cannot handle."""


def segment_samples(net: nn.Module, segment: float | None) -> int:
    """The fixed input length of the exported graph: one chunk (:meth:`Chunking.samples
    <stemsep.inference.chunked.Chunking.samples>`)."""
    chunk = Chunking(segment=segment).samples(net)  # a one-line error for a segment <= 0
    if uses_train_segment(net):
        training = Chunking().samples(net)
        if chunk != training:
            raise ExportError(f"--segment: {type(net).__name__} runs at its training segment "
                              f"({float(net.segment):g} s); leave --segment out")
        return training
    if chunk is None:
        raise ExportError(f"{type(net).__name__} has no segment; give the graph's length with --segment")
    return chunk


def metadata(net: nn.Module, parts: ExportParts, length: int, fmt: str) -> dict:
    """What travels with the file: the separation contract, the graph's names and fixed length, and
    the front end (``class_path`` under ``stemsep.models`` and its ``config``) that runs around it."""
    front = parts.front_end
    meta = {"format": fmt, "class_path": f"{type(net).__module__}.{type(net).__name__}",
            "sources": list(net.sources), "samplerate": int(net.samplerate),
            "audio_channels": int(net.audio_channels), "segment_samples": int(length),
            "inputs": list(parts.input_names), "outputs": list(parts.output_names),
            "front_end": {"class_path": f"{type(front).__module__}.{type(front).__qualname__}",
                          "config": front.config()}}
    if isinstance(front, FrontEnd):  # the keys files written before the front_end entry carry
        meta.update(nfft=front.nfft, hybrid=front.hybrid, reflect=front.reflect, cac=front.cac)
    return meta


def export_model(net: nn.Module, out: str | Path, fmt: str = "onnx", segment: float | None = None,
                 origin: str = "model") -> dict:
    """Export ``net``'s core to ``out`` (atomically); returns the metadata written with it."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    parts = None if bag_members(net) is not None else export_parts(net)
    if parts is None:
        kind = "a bag of models" if bag_members(net) is not None else type(net).__name__
        raise ExportError(f"{origin}: holds {kind}, which has no export path "
                          "(stemsep export handles single networks with export_parts(): HDemucs, HTDemucs, HSTasNet, "
                          "BSRoFormer, MelBandRoFormer, SCNet)")
    if is_quantized(net):
        raise ExportError(f"{origin}: int8 (stemsep quantize) checkpoints cannot be exported; export the "
                          "float32 checkpoint")
    net = net.eval()
    if isinstance(net, HTDemucs) and net.attention != "dense":
        net.set_attention_backend("dense")  # the exact kernel; sparse ones do not trace
    length = segment_samples(net, segment)
    meta = metadata(net, parts, length, fmt)
    mix = torch.randn(2, net.audio_channels, length, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        inputs, _ = parts.front_end.prepare(mix)
    core = parts.core.eval()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            _export_onnx(core, tuple(inputs), tmp, meta)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(core, tuple(inputs), check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    return meta


def _export_onnx(core: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, meta: dict) -> None:
    try:
        import onnxscript  # noqa: F401 - the exporter needs it; say so before it fails deep inside
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxscript: pip install 'stemsep[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(core, inputs, dynamo=True, input_names=meta["inputs"],
                                output_names=meta["outputs"], dynamic_shapes=tuple({0: batch} for _ in inputs),
                                external_data=False, verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(str(path), external_data=False)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str = "onnx",
                      segment: float | None = None) -> dict:
    """``stemsep export``: write the network of the stemsep ``checkpoint`` to ``out`` as ``format``
    (``"onnx"`` or ``"torchscript"``); ``segment``: the graph's fixed length in seconds (not for
    HT Demucs, which runs at its training segment; default the model's ``segment``). Returns the
    metadata stored with the file."""
    return export_model(load_separator(checkpoint), out, format, segment, origin=str(checkpoint))
