"""Ensembles of separations: one function, :func:`combine`, that every ensemble path uses.

    combine(stems, "avg_wave", weights=[2, 1])   # stems: (models, channels, time) -> (channels, time)

The eight modes are those of Music-Source-Separation-Training's ``ensemble.py`` (MSST, the
community's ensembling tool), with its definitions (a fact we follow; the code is ours):

* ``avg_wave``: the weighted mean of the waveforms, ``sum(w_i x_i) / sum(w)``;
* ``median_wave``: the median over models, sample by sample (an even count of models gives the mean
  of the two middle values, as ``numpy.median``);
* ``min_wave`` / ``max_wave``: sample by sample, the value of the model with the smallest / largest
  magnitude (its sign kept; ties go to the first model);
* ``avg_fft`` / ``median_fft`` / ``min_fft`` / ``max_fft``: the same on the complex STFT of each channel
  (2048-point periodic Hann window, hop 1024, centred with zero padding, as ``librosa.stft``), then
  the inverse STFT at the input's length. ``median_fft`` orders complex values as numpy does (by real
  part, then imaginary part) -- so it is not the median of magnitudes; we keep MSST's result.

Weights apply to the two ``avg_*`` modes only; MSST ignores them elsewhere, we refuse them there with
a one-line error rather than ignore what the user asked for.

:class:`Ensemble` combines networks of any families, source sets, sample rates and channel counts
into one network (stems matched by name); :func:`with_tta` adds MSST's test-time augmentation;
:func:`ensemble_files` is MSST's workflow on files already separated (``stemsep ensemble``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stemsep.contract import bag_members, check_network, records_init_args
from stemsep.errors import BadArgumentError, BadAudioError
from stemsep.inference.chunked import Chunking, apply_model
from stemsep.io.audio import decode_audio, resample, write_audio

WAVE_MODES = ("avg_wave", "median_wave", "min_wave", "max_wave")
FFT_MODES = ("avg_fft", "median_fft", "min_fft", "max_fft")
MODES = WAVE_MODES + FFT_MODES
N_FFT, HOP = 2048, 1024  # MSST's STFT for the *_fft modes


def check_mode(mode: str, weights: Sequence[float] | None = None, count: int | None = None) -> None:
    """One-line errors for an unknown mode, weights with a mode that has none, or a wrong count."""
    if mode not in MODES:
        raise BadArgumentError(f"unknown ensemble mode {mode!r}: choose one of {', '.join(MODES)}")
    if weights is None:
        return
    if not mode.startswith("avg_"):
        raise BadArgumentError(f"--weights apply to avg_wave and avg_fft only, not to {mode}")
    if count is not None and len(weights) != count:
        raise BadArgumentError(f"{len(weights)} weight(s) for {count} input(s): give one weight per input")
    if any(not np.isfinite(w) or w < 0 for w in weights) or not sum(weights) > 0:
        raise BadArgumentError(f"ensemble weights must be >= 0 with a positive sum, got {list(weights)}")


def combine(stems: torch.Tensor | np.ndarray, mode: str = "avg_wave",
            weights: Sequence[float] | None = None) -> torch.Tensor | np.ndarray:
    """``stems (models, channels, time)`` -> ``(channels, time)`` by ``mode`` (module docstring).

    A numpy array gives a numpy array, a tensor a tensor on its device and dtype.
    """
    as_numpy = isinstance(stems, np.ndarray)
    x = torch.from_numpy(np.asarray(stems)) if as_numpy else stems
    if x.dim() != 3:
        raise BadArgumentError(f"combine takes (models, channels, time) stems, got shape {tuple(x.shape)}")
    check_mode(mode, weights, x.shape[0])
    if mode in WAVE_MODES:
        out = _reduce(x, mode[:-5], weights)
    else:
        out = _istft(_reduce(_stft(x), mode[:-4], weights), x.shape[-1]).to(x.dtype)
    return out.numpy() if as_numpy else out


def _reduce(x: torch.Tensor, how: str, weights: Sequence[float] | None) -> torch.Tensor:
    """Reduce the models axis (0) of real or complex ``x``."""
    if how == "avg":
        w = torch.as_tensor(weights if weights is not None else [1.0] * x.shape[0], dtype=x.real.dtype,
                            device=x.device).reshape(-1, *[1] * (x.dim() - 1))
        return (x * w).sum(0) / w.sum()
    if how in ("min", "max"):
        magnitude = x.abs()
        pick = magnitude.argmin(0) if how == "min" else magnitude.argmax(0)  # first of equals, as numpy
        return x.gather(0, pick[None])[0]
    return _median(x)


def _median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median over axis 0: the middle value, or the mean of the two middle ones; complex
    values ordered by real part, then imaginary part (two stable sorts give that order)."""
    if x.is_complex():
        order = torch.sort(x.imag, dim=0, stable=True).indices
        order = order.gather(0, torch.sort(x.real.gather(0, order), dim=0, stable=True).indices)
        ordered = x.gather(0, order)
    else:
        ordered = torch.sort(x, dim=0).values
    count = x.shape[0]
    middle = ordered[count // 2]
    return middle if count % 2 else (ordered[count // 2 - 1] + middle) / 2


def _window(x: torch.Tensor) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=x.real.dtype, device=x.device)


def _stft(x: torch.Tensor) -> torch.Tensor:
    """``(..., time)`` -> complex ``(..., bins, frames)``, as ``librosa.stft(n_fft=2048, hop_length=1024)``."""
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(flat, N_FFT, HOP, window=_window(x), center=True, pad_mode="constant", return_complex=True)
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def _istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    flat = spec.reshape(-1, *spec.shape[-2:])
    wav = torch.istft(flat, N_FFT, HOP, window=_window(spec), center=True, length=length)
    return wav.reshape(*spec.shape[:-2], length)


# ---------------------------------------------------------------------------- networks
DERIVED_PREFIX = "no_"  # a derived stem "no_<stem>" is the mix less that stem's combined estimate


def derived_of(name: str) -> str:
    """The stem a derived stem removes from the mix: ``instrumental`` -> ``vocals``, ``no_<x>`` -> ``x``."""
    if name == "instrumental":
        return "vocals"
    if name.startswith(DERIVED_PREFIX) and len(name) > len(DERIVED_PREFIX):
        return name[len(DERIVED_PREFIX):]
    raise BadArgumentError(f"derived stem {name!r}: use 'instrumental' (mix - vocals) or 'no_<stem>' (mix - <stem>)")


@records_init_args
class Ensemble(nn.Module):
    """Separation networks of any families combined stem by stem into one network.

    The ensemble's ``samplerate`` defaults to the highest of its members' (no member's bandwidth is
    lost), ``audio_channels`` to the most channels. Each member runs on the mix at its own sample rate
    (the mix is resampled to it and its stems back, with soxr), with its own segment (:func:`~stemsep.inference.chunked.apply_model`, ``overlap`` /
    ``shifts`` / ``batch_size`` / ``seed`` as given here) and its own channel count (a mono member
    separates each channel of a stereo mix on its own; a stereo member given a mono mix sees it on
    both channels and its stems are averaged back to mono). Stems are matched by name: the
    ensemble's sources are every member's, in order of first appearance, then the ``derived`` ones.
    A stem comes from the members that produce it -- or those of ``pick[stem]`` (member indices) --
    combined by :func:`combine` with ``mode`` and the producers' ``weights`` (one per member, or
    ``{stem: [one per member]}``). Derived stems: ``instrumental`` = mix - vocals, ``no_<stem>`` =
    mix - that stem (its combined estimate).

    The ensemble has no segment of its own: it is given whole inputs (memory grows with the input's
    duration, unlike a single network's window-by-window separation of long files).
    """

    def __init__(self, models: list[nn.Module], mode: str = "avg_wave",
                 weights: list[float] | dict[str, list[float]] | None = None,
                 pick: dict[str, list[int]] | None = None, derived: list[str] | None = None,
                 samplerate: int | None = None, audio_channels: int | None = None,
                 overlap: float = 0.25, shifts: int = 0, batch_size: int = 1, seed: int = 0):
        super().__init__()
        if not models:
            raise BadArgumentError("an ensemble needs at least one model")
        check_mode(mode)
        if len(set(derived or [])) != len(derived or []):
            raise BadArgumentError(f"derived stems given twice: {list(derived)}")
        for index, model in enumerate(models):
            check_network(model, f"ensemble member {index}")
        self.members = nn.ModuleList(models)
        self.mode, self.derived = mode, list(derived or [])
        self.samplerate = int(samplerate or max(int(m.samplerate) for m in models))
        self.audio_channels = int(audio_channels or max(int(m.audio_channels) for m in models))
        self.chunking = Chunking(overlap=overlap, shifts=shifts, batch_size=batch_size, seed=seed)
        produced: list[str] = []
        for model in models:
            produced += [name for name in model.sources if name not in produced]
        self.producers = {name: [i for i, m in enumerate(models) if name in m.sources] for name in produced}
        for name, chosen in (pick or {}).items():
            if name not in self.producers:
                raise BadArgumentError(f"pick: no member produces {name!r} (they produce {', '.join(produced)})")
            wrong = [i for i in chosen if i not in self.producers[name]]
            if wrong or not chosen:
                raise BadArgumentError(f"pick {name}: member(s) {wrong or chosen} do not produce it (members "
                                       f"{self.producers[name]} do)")
            self.producers[name] = list(chosen)
        for name in self.derived:
            if derived_of(name) not in self.producers:
                raise BadArgumentError(f"derived stem {name!r} needs {derived_of(name)!r}, which no member produces")
            if name in self.producers:
                raise BadArgumentError(f"derived stem {name!r} is also a member's stem")
        if isinstance(weights, dict) and set(weights) - set(self.producers):
            raise BadArgumentError(f"weights for {sorted(set(weights) - set(self.producers))}: no member produces "
                                   f"it (they produce {', '.join(produced)})")
        self.stem_weights = {name: self._weights(name, weights, len(models)) for name in self.producers}
        self.sources = produced + self.derived

    def _weights(self, name: str, weights, count: int) -> list[float] | None:
        """The weights of ``name``'s producers (None: equal), checked against the mode."""
        if weights is None:
            return None
        row = weights.get(name) if isinstance(weights, dict) else weights
        if row is None:
            return None
        if len(row) != count:
            raise BadArgumentError(f"weights{'[' + name + ']' if isinstance(weights, dict) else ''}: {len(row)} "
                                   f"value(s) for {count} model(s); give one per model")
        chosen = [float(row[i]) for i in self.producers[name]]
        try:
            check_mode(self.mode, chosen, len(chosen))
        except BadArgumentError as err:
            raise BadArgumentError(f"weights of {name!r} (members {self.producers[name]}): {err}") from None
        return chosen

    def _member_stems(self, model: nn.Module, mix: torch.Tensor) -> torch.Tensor:
        """``model``'s stems of ``mix (B, C, T)`` at the ensemble's rate and channels: ``(B, S_m, C, T)``."""
        batch, channels, length = mix.shape
        rate, want = int(model.samplerate), int(model.audio_channels)
        x = resample(mix, self.samplerate, rate)
        if want == 1 and channels > 1:  # each channel on its own
            x = x.reshape(batch * channels, 1, -1)
        elif want != channels:
            x = x.mean(1, keepdim=True).expand(-1, want, -1)
        stems = apply_model(model, x.contiguous(), self.chunking)
        if want == 1 and channels > 1:
            stems = stems.reshape(batch, channels, len(model.sources), -1).transpose(1, 2)
        elif want != channels:
            stems = stems.mean(2, keepdim=True).expand(-1, -1, channels, -1)
        stems = resample(stems.contiguous(), rate, self.samplerate)
        if stems.shape[-1] != length:
            stems = nn.functional.pad(stems[..., :length], (0, max(0, length - stems.shape[-1])))
        return stems

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, S, C, T)``, ``S`` = :attr:`sources`."""
        outputs = [self._member_stems(model, mix) for model in self.members]
        stems = []
        for name, producers in self.producers.items():
            parts = torch.stack([outputs[i][:, list(self.members[i].sources).index(name)] for i in producers], 1)
            stems.append(torch.stack([combine(item, self.mode, self.stem_weights[name]) for item in parts]))
        for name in self.derived:
            stems.append(mix - stems[list(self.producers).index(derived_of(name))])
        return torch.stack(stems, 1)


class TTA(nn.Module):
    """MSST's test-time augmentation of one network: the mean of its stems of the mix, of the
    channel-swapped mix (stems swapped back) and of the polarity-inverted mix (stems negated).
    Every attribute of the network (its contract: sources, segment, ...) reads through, so chunking
    and shifts apply to it as to the network; the three passes then share chunk grid and shifts."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        swapped = self.net(mix.flip(1)).flip(2)
        return (self.net(mix) + swapped - self.net(-mix)) / 3


def with_tta(net: nn.Module) -> nn.Module:
    """``net`` with :class:`TTA` on every single network (a bag keeps its members and weights, an
    :class:`Ensemble` its members and settings, so each member keeps its own segment). An Ensemble is
    changed in place (its members wrapped); other networks are wrapped, not changed."""
    if isinstance(net, Ensemble):
        net.members = nn.ModuleList(with_tta(m) for m in net.members)
        return net
    members = bag_members(net)
    if members is not None:  # a BagOfModels (or a bag like it): the same bag of wrapped members
        return type(net)([with_tta(m) for m, _ in members], weights=[list(w) for _, w in members],
                         segment=getattr(net, "segment", None))
    return TTA(net)


def parse_pick(specs: Sequence[str] | None) -> dict[str, list[int]] | None:
    """``["vocals=0", "drums=1,2"]`` -> ``{"vocals": [0], "drums": [1, 2]}`` (one-line error otherwise)."""
    if not specs:
        return None
    pick: dict[str, list[int]] = {}
    for spec in specs:
        name, _, members = spec.partition("=")
        try:
            pick[name.strip()] = [int(m) for m in members.split(",")]
        except ValueError:
            raise BadArgumentError(f"--pick {spec!r}: write STEM=I[,J...] with member indices (0 = the first "
                                   "--model)") from None
        if not name.strip():
            raise BadArgumentError(f"--pick {spec!r}: no stem name before '='")
    return pick


def ensemble_weights(rows: Sequence[Sequence[float]] | None, count: int) -> list[float] | None:
    """``--weights`` of an ensemble: one number per model (rows of one value)."""
    if rows is None:
        return None
    if len(rows) != count or any(len(row) != 1 for row in rows):
        raise BadArgumentError(f"--weights with --ensemble: give one number per --model ({count}), e.g. "
                               f"--weights {' '.join(['1'] * count)}")
    return [float(row[0]) for row in rows]


def ensemble_of(nets: Sequence[nn.Module], mode: str, chunking: Chunking, *,
                weights: Sequence[Sequence[float]] | None = None, pick: Sequence[str] | None = None,
                derived: Sequence[str] = ()) -> Ensemble:
    """The :class:`Ensemble` that ``stemsep separate --ensemble`` / ``bag --ensemble`` make of loaded
    networks, its members chunked with ``chunking``'s options (their own segments)."""
    return Ensemble(list(nets), mode=mode, weights=ensemble_weights(weights, len(nets)), pick=parse_pick(pick),
                    derived=list(derived), overlap=chunking.overlap, shifts=chunking.shifts,
                    batch_size=chunking.batch_size, seed=chunking.seed)


def load_member(path: str | os.PathLike) -> tuple[dict, nn.Module, dict]:
    """``(network config, network with its weights, hyperparameters)`` of one checkpoint (a member of a
    bag or an ensemble file)."""
    from stemsep.io.checkpoint import load_network

    net, ckpt = load_network(path)
    hparams = ckpt.get("hyper_parameters") or {}
    config = hparams["net"]
    return {"class_path": config["class_path"], "init_args": dict(config.get("init_args") or {})}, net, hparams


def make_ensemble(models: Sequence[str | os.PathLike], out: str | os.PathLike, mode: str, *,
                  weights: Sequence[Sequence[float]] | None = None, pick: Sequence[str] | None = None,
                  derived: Sequence[str] = (), force: bool = False) -> Ensemble:
    """``stemsep bag --ensemble MODE``: write the ensemble of ``models`` (any families) as one
    checkpoint whose config nests the members' configs, loaded without pickled code."""
    from stemsep.io.checkpoint import save_checkpoint

    out = Path(out)
    if out.exists() and not force:
        raise BadArgumentError(f"{out}: already exists (use --force to overwrite)")
    members = [load_member(Path(path)) for path in models]
    net = ensemble_of([member for _, member, _ in members], mode, Chunking(), weights=weights, pick=pick,
                      derived=derived)
    config = {"class_path": f"{Ensemble.__module__}.{Ensemble.__qualname__}",
              "init_args": {**net.init_args, "models": [config for config, _, _ in members],
                            "weights": ensemble_weights(weights, len(members)), "pick": parse_pick(pick)}}
    save_checkpoint(out, net, config, {"bag_members": [str(p) for p in models]})
    return net


# ---------------------------------------------------------------------------- files
def ensemble_files(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, mode: str = "avg_wave",
                   weights: Sequence[float] | None = None, *, bits: int = 32) -> Path:
    """Combine separated files of one stem (one per model) into ``out`` (WAV/FLAC), as MSST's
    ``ensemble.py --files … --type … --weights …``.

    The files are read at their own rates; any at another rate than the first is resampled to it (and
    cut or padded to the first's length where resampling rounded it by a sample or two). Channel
    counts and lengths must agree, else a one-line error names the file.
    ``out`` is written atomically (32-bit float WAV by default, as MSST writes).
    """
    if len(inputs) < 1:
        raise BadArgumentError("ensemble needs at least one input file")
    check_mode(mode, weights, len(inputs))
    first, rate = decode_audio(inputs[0])
    waves = [first]
    for path in inputs[1:]:
        wav, sr = decode_audio(path)
        wav = resample(wav, sr, rate)
        if wav.shape[0] != first.shape[0]:
            raise BadAudioError(f"{path}: {wav.shape[0]} channel(s), but {inputs[0]} has {first.shape[0]}")
        slack = 0 if sr == rate else -(-rate // sr)  # resampling may round the length by a sample or so
        if 0 < abs(wav.shape[-1] - first.shape[-1]) <= slack:
            wav = torch.nn.functional.pad(wav[..., :first.shape[-1]], (0, max(0, first.shape[-1] - wav.shape[-1])))
        if wav.shape[-1] != first.shape[-1]:
            raise BadAudioError(f"{path}: {wav.shape[-1]} samples at {rate} Hz, but {inputs[0]} has "
                                f"{first.shape[-1]}: separations of the same input must have its length")
        waves.append(wav)
    return write_audio(out, combine(torch.stack(waves), mode, weights), rate, bits=bits)
