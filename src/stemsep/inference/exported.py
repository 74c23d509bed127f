"""Running a model written by ``stemsep export``: the thin wrapper around the exported core.

An exported file holds only the network core of a hybrid model (:meth:`HybridBase.core`):
``(mix (B, C, L), spectrogram as channels (B, C', F, frames)) -> (spectral branch output,
time branch output)``, real tensors, dynamic batch ``B``, the fixed segment ``L`` it was
exported with. ONNX has no inverse STFT and handles complex tensors poorly, so everything
around the core runs here in PyTorch (:class:`stemsep.models.spectral.FrontEnd`):

1. framing: an input shorter than ``L`` is zero-padded at the end to ``L`` (as HT Demucs
   does with its training segment) and the output cut back; longer inputs are refused;
   :func:`stemsep.inference.apply_model` chunks long mixes into ``L``-sample windows with
   real neighbouring context and overlap-adds them (this object says ``use_train_segment``);
2. STFT of the mix, as channels (or magnitude);
3. the exported core (ONNX Runtime or TorchScript);
4. masking, inverse STFT, plus the time branch.

The separation contract (sources, sample rate, channels, ``nfft``, ``L``...) travels with the
file as JSON: ONNX ``metadata_props`` key ``stemsep``, or the TorchScript extra file
``stemsep.json``. :class:`ExportedSeparator` is an ``nn.Module`` without parameters, so it
goes wherever a separation network goes (``apply_model``, ``stemsep separate --backend``).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.models.spectral import FrontEnd

METADATA_KEY = "stemsep"
TORCHSCRIPT_EXTRA = "stemsep.json"
BACKENDS = ("onnxruntime", "torchscript")


class ExportedSeparator(nn.Module):
    """``forward(mix (B, C, T <= L)) -> (B, S, C, T)`` with an exported core ``run(mix, spec)``."""

    def __init__(self, run, meta: dict[str, Any]):
        super().__init__()
        self._run = run
        self.sources = list(meta["sources"])
        self.samplerate = int(meta["samplerate"])
        self.audio_channels = int(meta["audio_channels"])
        self.length = int(meta["segment_samples"])
        self.segment = Fraction(self.length, self.samplerate)
        self.use_train_segment = True
        self.front_end = FrontEnd(int(meta["nfft"]), hybrid=bool(meta["hybrid"]), reflect=bool(meta["reflect"]),
                                  cac=bool(meta["cac"]))

    def valid_length(self, length: int) -> int:
        if length > self.length:
            raise StemsepError(f"input of {length} samples is longer than the exported segment "
                               f"({self.length} samples); use a shorter --segment")
        return self.length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        mix = nn.functional.pad(mix.float(), (0, self.valid_length(length) - length))
        z = self.front_end.spectrogram(mix)
        spec_out, time_out = self._run(mix, self.front_end.channels(z))
        return self.front_end.waveforms(z, spec_out, time_out, self.length)[..., :length]


def _onnx_runner(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise StemsepError("--backend onnxruntime needs onnxruntime: pip install 'stemsep[export]'") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - one line naming the file
        raise BadCheckpointError(f"{path}: not a loadable ONNX model ({str(err).strip().splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    names = [o.name for o in session.get_outputs()]

    def run(mix: torch.Tensor, spec: torch.Tensor):
        outs = session.run(names, {"mix": mix.cpu().numpy(), "spec": spec.cpu().numpy()})
        outs = [torch.from_numpy(o).to(mix.device) for o in outs]
        return outs[0], (outs[1] if len(outs) > 1 else None)

    return run, meta


def _torchscript_runner(path: Path):
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    except Exception as err:  # noqa: BLE001 - one line naming the file
        raise BadCheckpointError(f"{path}: not a loadable TorchScript model ({str(err).strip().splitlines()[0]})"
                                 ) from None

    def run(mix: torch.Tensor, spec: torch.Tensor):
        with torch.no_grad():
            outs = module(mix.cpu(), spec.cpu())
        return outs[0].to(mix.device), (outs[1].to(mix.device) if len(outs) > 1 else None)

    return run, extra[TORCHSCRIPT_EXTRA] or None


def load_exported(path: str | os.PathLike, backend: str) -> ExportedSeparator:
    """Load a ``stemsep export`` file for ``backend`` (``onnxruntime`` or ``torchscript``)."""
    path = Path(path)
    if backend not in BACKENDS:
        raise StemsepError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not path.is_file():
        raise BadCheckpointError(f"{path}: exported model not found")
    run, meta = (_onnx_runner if backend == "onnxruntime" else _torchscript_runner)(path)
    if not meta:
        raise BadCheckpointError(f"{path}: no stemsep metadata; was it written by `stemsep export`?")
    try:
        return ExportedSeparator(run, json.loads(meta))
    except (ValueError, KeyError, TypeError) as err:
        raise BadCheckpointError(f"{path}: unreadable stemsep metadata ({err})") from None
