"""``stemsep export``: write a checkpoint's network as ONNX or TorchScript for use outside stemsep training.

    stemsep export model.ckpt --format onnx -o model.onnx
    stemsep separate song.wav --model model.onnx --backend onnxruntime -o separated/

Only the real-valued network core of a Hybrid (Transformer) Demucs is exported
(:meth:`stemsep.models.hybrid.HybridBase.core`): ONNX cannot express the inverse STFT and
handles complex tensors poorly, so STFT, masking, ISTFT and chunking stay in the thin wrapper
documented in :mod:`stemsep.inference.exported`. The graph has a dynamic batch axis and a fixed segment
length: HT Demucs' training segment, or ``--segment`` seconds for Hybrid Demucs (default its
``segment``). Attention is exported with the exact ``dense`` kernel. ONNX export uses the
``torch.export`` based exporter (needs ``onnx``/``onnxscript``: ``pip install 'stemsep[export]'``);
TorchScript export traces the same core. Bags and other networks have no export path.
:func:`export_checkpoint` is the command as a library function.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from stemsep.contract import bag_members, uses_train_segment
from stemsep.errors import StemsepError
from stemsep.inference.exported import METADATA_KEY, TORCHSCRIPT_EXTRA
from stemsep.io.checkpoint import load_separator
from stemsep.io.files import atomic_path
from stemsep.io.quantized import is_quantized
from stemsep.models.htdemucs import HTDemucs
from stemsep.models.hybrid import HybridBase

FORMATS = ("onnx", "torchscript")


class ExportError(StemsepError):
    """A model or option that ``stemsep export`` cannot handle."""


class _Core(nn.Module):
    """``(mix, spec) -> (spec_out, time_out)`` of a hybrid model, ``time_out`` left out when absent."""

    def __init__(self, net: HybridBase):
        super().__init__()
        self.net = net

    def forward(self, mix: torch.Tensor, spec: torch.Tensor):
        spec_out, time_out = self.net.core(mix, spec)
        return (spec_out,) if time_out is None else (spec_out, time_out)


def segment_samples(net: HybridBase, segment: float | None) -> int:
    """The fixed input length of the exported graph."""
    if uses_train_segment(net):
        training = int(net.segment * net.samplerate)
        if segment is not None and int(segment * net.samplerate) != training:
            raise ExportError(f"--segment: {type(net).__name__} runs at its training segment "
                              f"({float(net.segment):g} s); leave --segment out")
        return training
    samples = int((segment if segment is not None else net.segment) * net.samplerate)
    if samples <= 0:
        raise ExportError(f"--segment must be positive, got {segment}")
    return samples


def metadata(net: HybridBase, length: int, fmt: str) -> dict:
    front = net.front_end
    return {"format": fmt, "class_path": f"{type(net).__module__}.{type(net).__name__}",
            "sources": list(net.sources), "samplerate": int(net.samplerate),
            "audio_channels": int(net.audio_channels), "segment_samples": int(length), "nfft": front.nfft,
            "hybrid": front.hybrid, "reflect": front.reflect, "cac": front.cac,
            "outputs": ["spec_out", "time_out"] if front.hybrid else ["spec_out"]}


def export_model(net: nn.Module, out: str | Path, fmt: str = "onnx", segment: float | None = None,
                 origin: str = "model") -> dict:
    """Export ``net``'s core to ``out`` (atomically); returns the metadata written with it."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not isinstance(net, HybridBase):
        kind = "a bag of models" if bag_members(net) is not None else type(net).__name__
        raise ExportError(f"{origin}: holds {kind}, which has no export path "
                          "(stemsep export handles single HDemucs / HTDemucs checkpoints)")
    if is_quantized(net):
        raise ExportError(f"{origin}: int8 (stemsep quantize) checkpoints cannot be exported; export the "
                          "float32 checkpoint")
    net = net.eval()
    if isinstance(net, HTDemucs) and net.attention != "dense":
        net.set_attention_backend("dense")  # the exact kernel; sparse ones do not trace
    length = segment_samples(net, segment)
    meta = metadata(net, length, fmt)
    mix = torch.randn(2, net.audio_channels, length, generator=torch.Generator().manual_seed(0))
    spec = net.front_end.channels(net.front_end.spectrogram(mix))
    core = _Core(net).eval()
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            _export_onnx(core, (mix, spec), tmp, meta)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(core, (mix, spec), check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    return meta


def _export_onnx(core: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor], path: Path, meta: dict) -> None:
    try:
        import onnxscript  # noqa: F401 - the exporter needs it; say so before it fails deep inside
    except ImportError:
        raise ExportError("ONNX export needs onnx and onnxscript: pip install 'stemsep[export]'") from None
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(core, inputs, dynamo=True, input_names=["mix", "spec"],
                                output_names=meta["outputs"], dynamic_shapes={"mix": {0: batch}, "spec": {0: batch}},
                                external_data=False, verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.save(str(path), external_data=False)


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, format: str = "onnx",
                      segment: float | None = None) -> dict:
    """``stemsep export``: write the network of the stemsep ``checkpoint`` to ``out`` as ``format``
    (``"onnx"`` or ``"torchscript"``); ``segment``: the graph's fixed length in seconds (Hybrid
    Demucs only; default the model's). Returns the metadata stored with the file."""
    return export_model(load_separator(checkpoint), out, format, segment, origin=str(checkpoint))
