"""The Python API of ``stemsep separate``: load a model (or a bag) once, separate tensors or files.

    from stemsep.inference import Separator   # also importable as stemsep.Separator

    sep = Separator.from_checkpoint("last.ckpt", shifts=1)
    stems = sep.separate(mix, samplerate=48000)          # {"drums": (channels, time), ...}
    data, sr = soundfile.read("song.wav")                # (time, channels), int16 or float
    stems = sep.separate(data, sr)                       # {"drums": (time, channels), ...}
    paths = sep.separate_file("song.m4a", "separated/")  # {"drums": separated/song/drums.wav, ...}
    sep.separate_file("song.m4a", "karaoke/", two_stems="vocals", format="mp3", keep_rate=True)

:class:`Separator` is the engine of every separation: it holds the network (or bag), its device and
the :class:`~stemsep.inference.chunked.Chunking`; ``stemsep separate``
(:func:`~stemsep.inference.separate.separate_files`) is a loop over one, so a file separated here and
by the command with the same options gives the same stems.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from stemsep.contract import check_same_kind
from stemsep.errors import BadArgumentError, BadAudioError, StemsepError
from stemsep.inference.bag import BagOfModels, check_weights
from stemsep.inference.chunked import Chunking
from stemsep.inference.cpu import optimize_for_cpu
from stemsep.inference.device import resolve_device
from stemsep.inference.inputs import track_name
from stemsep.inference.stream import StreamingSeparator
from stemsep.inference.tracks import TrackWriter
from stemsep.inference.windowed import WINDOW_SECONDS, check_window, separate_mixes
from stemsep.inference.writing import WriteOptions, seed_key
from stemsep.io.audio import resample, to_channels
from stemsep.io.checkpoint import load_separator
from stemsep.io.files import ensure_writable_dir
from stemsep.io.registry import is_model_name
from stemsep.io.remote import is_url, name_of

PathLike = str | os.PathLike


def default_batch_size(device: torch.device) -> int:
    """Chunks per network call: 1 on CPU (measured: batching chunks is slower there), 8 on GPU."""
    return 1 if device.type == "cpu" else 8


def load_models(paths: Sequence[str | os.PathLike], weights: Sequence[Sequence[float]] | None, device: torch.device,
                backend: str = "torch") -> torch.nn.Module:
    """The network (one model, or a bag of them mixed with ``weights``), on ``device``, in eval mode;
    on CPU with its CPU inference rewrites (:func:`~stemsep.inference.cpu.optimize_for_cpu`)."""
    if backend == "torch":
        nets = [load_separator(name_of(path), map_location="cpu") for path in paths]
    else:
        from stemsep.inference.exported import load_exported

        nets = [load_exported(Path(path), backend) for path in paths]
    from stemsep.io.quantized import is_quantized

    if device.type != "cpu" and any(is_quantized(n) for n in nets):
        raise StemsepError(f"int8 models (stemsep quantize) run on the CPU only; add --device cpu (not {device})")
    check_same_kind(nets, [str(p) for p in paths])
    rows = check_weights(weights, len(nets), len(nets[0].sources))
    net = nets[0] if len(nets) == 1 and rows is None else BagOfModels(nets, weights=rows)
    net = net.to(device).eval()
    return optimize_for_cpu(net) if device.type == "cpu" and backend == "torch" else net


def chunking_for(device: torch.device, *, shifts: int = 1, overlap: float = 0.25,
                 segment: float | Fraction | None = None, batch_size: int | None = None, seed: int = 0) -> Chunking:
    """The :class:`~stemsep.inference.chunked.Chunking` of a separation on ``device``, with the
    defaults of ``stemsep separate`` (one random shift; ``batch_size``: :func:`default_batch_size`)."""
    return Chunking(segment=segment, overlap=overlap, shifts=shifts, seed=seed,
                    batch_size=default_batch_size(device) if batch_size is None else batch_size)


def _chunking_arg(device: torch.device, chunking: Chunking | None, shifts: int, overlap: float,
                  segment: float | Fraction | None, batch_size: int | None, seed: int) -> Chunking:
    """``chunking``, or the one its options make (:func:`chunking_for`); not both (TypeError)."""
    if chunking is None:
        return chunking_for(device, shifts=shifts, overlap=overlap, segment=segment, batch_size=batch_size,
                            seed=seed)
    if (shifts, overlap, segment, batch_size, seed) != (1, 0.25, None, None, 0):
        raise TypeError("Separator: pass either chunking or its options (shifts, overlap, segment, "
                        "batch_size, seed), not both")
    return chunking


def model_name(path: str | os.PathLike) -> str:
    """How a model is named in the provenance record: its URL, a released model's name, or its
    absolute path."""
    name = name_of(path)
    return str(name) if is_url(name) or is_model_name(name) else str(Path(name).resolve())


class Separator:
    """A loaded network (or bag of networks) and the chunking options to separate with.

    Build one with :meth:`from_checkpoint`. ``sources``, ``samplerate`` and ``audio_channels`` are
    the network's.
    """

    def __init__(self, net: torch.nn.Module, *, device: str | torch.device, shifts: int = 1, overlap: float = 0.25,
                 segment: float | Fraction | None = None, batch_size: int | None = None,
                 window: float = WINDOW_SECONDS, models: Sequence[str] | None = None, seed: int = 0,
                 chunking: Chunking | None = None):
        self.device = resolve_device(device)
        chunking = _chunking_arg(self.device, chunking, shifts, overlap, segment, batch_size, seed)
        check_window(window)
        self.net, self.chunking = net, chunking
        self.window = window  # files longer than this many seconds are separated window by window
        # what the written stems' provenance records about the model and the chunking options
        self.run_key = {"models": list(models) if models else [type(net).__name__], "shifts": chunking.shifts,
                        "overlap": chunking.overlap, "segment": chunking.segment,
                        **seed_key(chunking.shifts, chunking.seed)}

    @classmethod
    def from_checkpoint(cls, path: PathLike | Sequence[PathLike], device: str | torch.device | None = None, *,
                        shifts: int = 1, overlap: float = 0.25, segment: float | Fraction | None = None,
                        batch_size: int | None = None, weights: Sequence[Sequence[float]] | None = None,
                        backend: str = "torch", seed: int = 0, window: float = WINDOW_SECONDS,
                        chunking: Chunking | None = None) -> Separator:
        """Load a stemsep checkpoint (a path or an ``http(s)://``/``s3://`` URL); several make a bag
        mixed with ``weights[model][source]``.

        ``device`` (cpu, cuda, cuda:N, mps; :func:`~stemsep.inference.device.resolve_device`) default:
        cuda when available, else cpu; ``batch_size`` default: 1 on CPU, 8 on GPU.
        ``shifts``/``seed``/``overlap``/``segment`` are those of ``stemsep separate`` (the same
        ``seed`` gives the same stems, run after run), or pass them as one ``chunking``; ``backend``
        ``"onnxruntime"``/``"torchscript"`` loads ``stemsep export`` files instead.
        """
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        torch_device = resolve_device(device)
        chunking = _chunking_arg(torch_device, chunking, shifts, overlap, segment, batch_size, seed)  # before loading
        check_window(window)
        net = load_models(paths, weights, torch_device, backend)
        sep = cls(net, device=torch_device, chunking=chunking, window=window, models=[model_name(p) for p in paths])
        sep.run_key.update(weights=weights, backend=backend)
        return sep

    @classmethod
    def from_pretrained(cls, name: str, device: str | torch.device | None = None, *, trust_unverified: bool = False,
                        **options) -> Separator:
        """A released model by name (``stemsep models list``: ``"htdemucs_ft"``, ...): fetched, checked
        and converted on first use, then read from the model cache (:func:`~stemsep.io.pretrained.fetch_model`);
        ``options`` as :meth:`from_checkpoint`'s."""
        from stemsep.io.pretrained import fetch_model

        return cls.from_checkpoint(fetch_model(name, trust_unverified=trust_unverified), device, **options)

    def separate_mixes(self, mixes: list[torch.Tensor]) -> list[torch.Tensor]:
        """``(channels, time)`` tensors at the model's rate and channel count (normalised in place)
        -> ``(sources, channels, time)`` each (:func:`~stemsep.inference.windowed.separate_mixes`)."""
        with torch.no_grad():
            return separate_mixes(self.net, mixes, self.chunking)

    def stream(self, *, causal: bool | None = None, **options) -> StreamingSeparator:
        """A :class:`~stemsep.inference.stream.StreamingSeparator` for this model: ``push`` blocks,
        ``flush`` at the end (what ``stemsep stream`` runs).

        A network whose every member declares the causal contract (HS-TasNet) streams step by step,
        unless ``causal=False`` or a chunking option (``segment``, ``overlap``, ``batch_size``,
        ``transition_power``) is given; every other one streams windowed with this Separator's
        chunking updated by ``options``, without shifts (a stream cannot be shifted)."""
        from dataclasses import replace

        from stemsep.contract import stream_step_of
        from stemsep.inference.chunked import member_scales

        members = member_scales(self.net, torch.ones(len(self.sources), dtype=torch.float64))
        if causal or causal is None and not options and all(stream_step_of(m) for m, _ in members):
            return StreamingSeparator(self.net, causal=True, **options)
        return StreamingSeparator(self.net, replace(self.chunking, shifts=0, **options), causal=False)

    # the chunking options, as attributes (read-only: build another Separator to change them)
    shifts = property(lambda self: self.chunking.shifts)
    overlap = property(lambda self: self.chunking.overlap)
    segment = property(lambda self: self.chunking.segment)
    batch_size = property(lambda self: self.chunking.batch_size)
    seed = property(lambda self: self.chunking.seed)

    @property
    def sources(self) -> list[str]:
        return list(self.net.sources)

    @property
    def samplerate(self) -> int:
        return int(self.net.samplerate)

    @property
    def audio_channels(self) -> int:
        return int(self.net.audio_channels)

    def separate(self, mix: torch.Tensor | np.ndarray, samplerate: int, *,
                 layout: str | None = None) -> dict[str, torch.Tensor]:
        """Stems of ``mix`` (a tensor or NumPy array) at ``samplerate`` Hz (a positive integer).

        Layouts: ``(time,)`` (mono); ``(channels, time)`` or ``(time, channels)`` — what
        ``soundfile.read`` returns — and ``(batch, channels, time)`` or ``(batch, time, channels)``.
        Which axis holds the channels is decided from the model's ``audio_channels``: the axis
        whose size is a channel count it takes (1, its own, or — stereo and mono models — up to
        :data:`MAX_CHANNELS`, downmixed) while the other's is not; when both could be (e.g. a 2x2
        array for a stereo model) or neither, a one-line :class:`BadAudioError`. ``layout``
        (``"channels_first"`` / ``"channels_last"``) says it instead of guessing. Samples: floats in
        [-1, 1], or integer PCM scaled to [-1, 1) (int16 / 32768, int32 / 2**31, int8 / 128,
        uint8 (x - 128) / 128).

        Returns ``{source: float32 tensor}`` on the CPU, at ``samplerate`` and the input's exact
        length, with the model's channel count, in the input's layout: ``(channels, time)`` (also
        for ``(time,)``) or ``(time, channels)``, with the batch axis first for a batch. The mix is
        resampled to the model's rate and back (soxr, "VHQ"), mono duplicated, surround downmixed,
        and normalised by its mean and standard deviation as the command does. ``mix`` itself is
        not modified.
        """
        rate = _check_rate(samplerate)
        if layout not in (None, *LAYOUTS):
            raise BadArgumentError(f"layout {layout!r}: choose {' or '.join(LAYOUTS)} (or None: guessed)")
        wav = _as_float(mix)
        if wav.dim() not in (1, 2, 3):
            raise BadAudioError(f"mix of shape {tuple(wav.shape)}: expected (time,), (channels, time), "
                                "(time, channels) or a batch of them (batch, channels, time)")
        shape = tuple(wav.shape)
        last = wav.dim() > 1 and _channel_axis(shape[-2:], self.audio_channels, layout) == 1
        if last:
            wav = wav.transpose(-1, -2)
        if wav.shape[-1] == 0:
            raise BadAudioError(f"mix of shape {shape}: no samples (time must be > 0)")
        if not torch.isfinite(wav).all():
            raise BadAudioError("mix contains NaN or Inf samples")
        batched = wav.dim() == 3
        items = list(wav) if batched else [wav.reshape(1, -1) if wav.dim() == 1 else wav]
        length = items[0].shape[-1]
        mixes = [torch.from_numpy(np.ascontiguousarray(to_channels(item.numpy(), self.audio_channels, name="mix")))
                 for item in items]
        mixes = [resample(m, rate, self.samplerate).clone() for m in mixes]  # own copies: normalised in place
        outs = self.separate_mixes(mixes)
        outs = [_fit(resample(out, self.samplerate, rate), length) for out in outs]
        stacked = torch.stack(outs) if batched else outs[0]  # ([batch,] sources, channels, time)
        index = 1 if batched else 0
        stems = {source: stacked.select(index, j) for j, source in enumerate(self.sources)}
        return {k: v.transpose(-1, -2).contiguous() for k, v in stems.items()} if last else stems

    def separate_file(self, path: PathLike, out_dir: PathLike, *, overwrite: bool = False,
                      **write_options) -> dict[str, Path]:
        """Separate one file (any supported format, rate, channel count) as ``stemsep separate`` does.

        ``write_options`` are those of :class:`~stemsep.inference.separate.WriteOptions`: ``format``
        (wav/flac/mp3), ``bits``, ``mp3_bitrate``, ``clip_mode`` (rescale/clamp/none), ``filename``
        (template, default ``"{track}/{stem}.{ext}"``), ``two_stems``, ``stems``, ``keep_rate``.
        Written atomically (a failure leaves no track folder). Outputs of the same input are
        replaced; outputs of another input mapping to the same files are a one-line error unless
        ``overwrite``. Files longer than ``window`` seconds stream (constant memory).
        Returns ``{stem: written path}``.
        """
        try:
            opts = WriteOptions(**write_options)
        except TypeError:
            known = ", ".join(WriteOptions.__dataclass_fields__)
            raise BadArgumentError(f"separate_file: unknown write option(s) {', '.join(sorted(write_options))} "
                                   f"(known: {known})") from None
        path, out = Path(path), Path(out_dir)
        if not path.is_file():
            raise BadAudioError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
        writer = TrackWriter(self, out, opts)
        job = writer.job(path, track_name(path))
        if not overwrite:
            writer.state(job)  # raises for outputs of another input
        ensure_writable_dir(out)
        with torch.no_grad():
            for group in writer.groups([job]):
                writer.run(group)
        return dict(job.targets)

    def __repr__(self) -> str:
        return (f"Separator({type(self.net).__name__}, sources={self.sources}, samplerate={self.samplerate}, "
                f"device={self.device}, shifts={self.shifts}, seed={self.seed}, overlap={self.overlap})")


def _fit(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to ``length`` (resampling there and back may be off by one)."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


LAYOUTS = ("channels_first", "channels_last")
# The most channels a mix is taken to have when its layout is guessed (7.1 surround); with an explicit
# ``layout``, any count the model takes.
MAX_CHANNELS = 8
# Integer PCM -> float: (x - offset) / scale, in [-1, 1).
_PCM = {"int8": (0, 128), "uint8": (128, 128), "int16": (0, 32768), "int32": (0, 2 ** 31)}


def _check_rate(samplerate) -> int:
    """``samplerate`` as a positive ``int`` (a whole float such as 48000.0 too), else a one-line error."""
    if isinstance(samplerate, numbers.Real) and not isinstance(samplerate, bool) \
            and float(samplerate).is_integer() and samplerate > 0:
        return int(samplerate)
    raise BadArgumentError(f"samplerate {samplerate!r}: must be a positive whole number of Hz (e.g. 44100)")


def _as_float(mix) -> torch.Tensor:
    """``mix`` as a float32 CPU tensor (not a copy when it already is one); integer PCM scaled to [-1, 1)."""
    if isinstance(mix, torch.Tensor):
        wav = mix.detach().cpu()
        name = str(wav.dtype).removeprefix("torch.")
        floating = wav.is_floating_point()
    else:
        wav = np.ascontiguousarray(mix)  # torch takes no negative strides
        name, floating = wav.dtype.name, wav.dtype.kind == "f"
    if name in _PCM:
        offset, scale = _PCM[name]
        wav = torch.as_tensor(wav).to(torch.float64)
        return ((wav - offset) / scale).to(torch.float32) if offset else (wav / scale).to(torch.float32)
    if not floating:
        raise BadAudioError(f"mix of dtype {name}: expected float samples in [-1, 1] or integer PCM "
                            f"({', '.join(_PCM)})")
    return torch.as_tensor(wav).to(torch.float32)


def _takes(channels: int, model_channels: int) -> bool:
    """Whether ``channels`` is a plausible channel count of a mix for a ``model_channels`` model."""
    if not 1 <= channels <= MAX_CHANNELS:
        return False
    return channels in (1, model_channels) or model_channels == 1 or (model_channels == 2 and channels > 2)


def _channel_axis(shape: tuple[int, int], model_channels: int, layout: str | None) -> int:
    """0 when ``shape`` is ``(channels, time)``, 1 when ``(time, channels)`` (see :meth:`Separator.separate`)."""
    if layout is not None:
        return LAYOUTS.index(layout)
    axes = [axis for axis, size in enumerate(shape) if _takes(size, model_channels)]
    if len(axes) == 1:
        return axes[0]
    fix = ("pass layout='channels_first' for (channels, time) or layout='channels_last' for (time, channels)")
    if axes:
        raise BadAudioError(f"mix of shape {shape} is ambiguous for a {model_channels}-channel model: either "
                            f"axis could hold the channels; {fix}")
    counts = f"1 to {MAX_CHANNELS}" if model_channels <= 2 else f"1 or {model_channels}"
    raise BadAudioError(f"mix of shape {shape}: neither axis is a channel count a {model_channels}-channel model "
                        f"takes ({counts}); expected (channels, time) or (time, channels)")
