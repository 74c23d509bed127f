"""Running a model written by ``stemsep export``: the thin wrapper around the exported core.

An exported file holds only the real-valued core of a spectral network
(:class:`stemsep.contract.ExportParts`): real tensors in and out, dynamic batch ``B``, the fixed
segment ``L`` it was exported with. ONNX has no inverse STFT and handles complex tensors poorly,
so everything around the core runs here in PyTorch, through the network's front end
(:class:`stemsep.contract.ExportFrontEnd`, rebuilt from the file's metadata):

1. framing: an input shorter than ``L`` is zero-padded at the end to ``L`` (as HT Demucs
   does with its training segment) and the output cut back; longer inputs are refused;
   :func:`stemsep.inference.apply_model` chunks long mixes into ``L``-sample windows with
   real neighbouring context and overlap-adds them (this object says ``use_train_segment``);
2. ``front_end.prepare(mix)``: the core's inputs, e.g. the STFT as channels (HT Demucs:
   ``(mix, spec)``; RoFormers: the STFT as real values);
3. the exported core (ONNX Runtime or TorchScript);
4. ``front_end.finish(outputs, ...)``: masking, inverse STFT (plus HT Demucs' time branch).

The separation contract (sources, sample rate, channels, ``L``, input and output names, the front
end's class path and settings) travels with the file as JSON: ONNX ``metadata_props`` key
``stemsep``, or the TorchScript extra file ``stemsep.json``. Only front-end classes under
``stemsep.models`` are imported; files written before the front end was recorded (Hybrid
(Transformer) Demucs: ``nfft``, ``hybrid``, ``reflect``, ``cac`` keys) still load.
:class:`ExportedSeparator` is an ``nn.Module`` without parameters, so it goes wherever a
separation network goes (``apply_model``, ``stemsep separate --backend``).
"""

from __future__ import annotations

import importlib
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


FRONT_END_PACKAGE = "stemsep.models."


def front_end_of(meta: dict[str, Any]):
    """The front end an exported file names (``meta["front_end"]``), or Hybrid Demucs' from the
    keys of older files."""
    entry = meta.get("front_end")
    if entry is None:
        return FrontEnd(int(meta["nfft"]), hybrid=bool(meta["hybrid"]), reflect=bool(meta["reflect"]),
                        cac=bool(meta["cac"]))
    class_path = str(entry["class_path"])
    module_name, _, name = class_path.rpartition(".")
    if not class_path.startswith(FRONT_END_PACKAGE):
        raise ValueError(f"front end {class_path!r} is not a stemsep.models class")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ValueError(f"front end {class_path!r} not found in this stemsep") from None
    front = cls(**entry["config"])
    if not (callable(getattr(front, "prepare", None)) and callable(getattr(front, "finish", None))):
        raise ValueError(f"{class_path!r} is not an export front end (prepare / finish)")
    return front


class ExportedSeparator(nn.Module):
    """``forward(mix (B, C, T <= L)) -> (B, S, C, T)`` with an exported core ``run(*inputs) -> outputs``."""

    def __init__(self, run, meta: dict[str, Any]):
        super().__init__()
        self._run = run
        self.sources = list(meta["sources"])
        self.samplerate = int(meta["samplerate"])
        self.audio_channels = int(meta["audio_channels"])
        self.length = int(meta["segment_samples"])
        self.segment = Fraction(self.length, self.samplerate)
        self.use_train_segment = True
        self.front_end = front_end_of(meta)

    def valid_length(self, length: int) -> int:
        if length > self.length:
            raise StemsepError(f"input of {length} samples is longer than the exported segment "
                               f"({self.length} samples); use a shorter --segment")
        return self.length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        mix = nn.functional.pad(mix.float(), (0, self.valid_length(length) - length))
        inputs, state = self.front_end.prepare(mix)
        outputs = self._run(*inputs)
        return self.front_end.finish(outputs, state, self.length)[..., :length]


def _onnx_runner(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise StemsepError("--backend onnxruntime needs onnxruntime: pip install 'stemsep[export]'") from None
    try:
        options = ort.SessionOptions()
        if _has_reducing_scatter(path):
            # onnxruntime's CPU ScatterND/ScatterElements race on duplicate indices when run on
            # several threads (microsoft/onnxruntime#18048): wrong sums, now and then.
            options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - one line naming the file
        raise BadCheckpointError(f"{path}: not a loadable ONNX model ({str(err).strip().splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {name: t.detach().float().cpu().numpy() for name, t in zip(inputs, tensors, strict=True)}
        return tuple(torch.from_numpy(o).to(tensors[0].device) for o in session.run(names, feed))

    return run, meta


def _torchscript_runner(path: Path):
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    except Exception as err:  # noqa: BLE001 - one line naming the file
        raise BadCheckpointError(f"{path}: not a loadable TorchScript model ({str(err).strip().splitlines()[0]})"
                                 ) from None

    def run(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            outs = module(*(t.cpu() for t in tensors))
        return tuple(o.to(tensors[0].device) for o in outs)

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


def _has_reducing_scatter(path: Path) -> bool:
    """Whether the ONNX graph at ``path`` scatters with a reduction (e.g. Mel-Band RoFormer's
    overlapping-band sum, ``index_add`` with repeated indices). Without ``onnx`` to look: assume so."""
    try:
        import onnx
    except ImportError:
        return True
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - onnxruntime reports an unreadable file itself
        return False
    nodes = list(graph.node)
    for node in nodes:
        nodes.extend(n for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH for n in attr.g.node)
        if node.op_type in ("ScatterND", "ScatterElements") and any(
                attr.name == "reduction" and attr.s not in (b"", b"none") for attr in node.attribute):
            return True
    return False
