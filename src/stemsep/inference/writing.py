"""How a separated track is written: ``stemsep separate``'s writing options and the record of
what produced each file.

:class:`WriteOptions` (format, bits, clipping, the ``--filename`` template, ``--two-stems`` /
``--stems``, the output rate) are checked once, when built. Every written stem carries in its
comment tag the input that produced it and a digest of the options (:mod:`stemsep.io.provenance`);
:func:`track_state` reads them back to tell a finished track from one to (re)do. :class:`StemSink`
receives a track's stems block by block and writes the final files (the peak over all stems is
known before the first sample is written, for ``--clip-mode rescale``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stemsep.errors import BadArgumentError, StemsepError
from stemsep.io.audio import (
    MP3_BITRATES,
    READ_BLOCK,
    WRITE_FORMATS,
    Resampler,
    is_integer_format,
    open_writer,
)
from stemsep.io.files import atomic_path
from stemsep.io.provenance import read_provenance
from stemsep.io.staging import RAW_PREFIX

FORMATS = WRITE_FORMATS
BITS = (16, 24, 32)
CLIP_MODES = ("rescale", "clamp", "none")
TEMPLATE_FIELDS = ("track", "trackext", "folder", "stem", "ext")
DEFAULT_FILENAME = "{track}/{stem}.{ext}"


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s.strip() for s in items if s.strip())


def check_template(template: str) -> None:
    """Refuse a ``--filename`` template with unknown variables, without ``{stem}``, or leaving ``OUT``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise BadArgumentError(f"--filename {template!r}: not a valid template ({err})") from None
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        raise BadArgumentError(f"--filename {template!r}: unknown variable {{{unknown[0]}}} (use "
                               + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS) + ")")
    if "stem" not in fields:
        raise BadArgumentError(f"--filename {template!r}: must contain {{stem}} (each stem needs its own file)")
    if template.startswith(("/", "\\")) or ".." in Path(template).parts:
        raise BadArgumentError(f"--filename {template!r}: must be a relative path inside the output directory")


def check_write_options(format: str, bits: int, *, mp3_bitrate: int = 320, clip_mode: str = "rescale",
                        filename: str = DEFAULT_FILENAME, two_stems: str | None = None,
                        stems: Sequence[str] | str | None = None) -> None:
    """Refuse writing options :class:`TrackWriter` cannot honour (one-line :class:`BadArgumentError`)."""
    if format not in FORMATS:
        raise BadArgumentError(f"--format {format}: choose {', '.join(FORMATS)}")
    if format != "mp3" and bits not in BITS:
        raise BadArgumentError(f"--format {format} --bits {bits}: choose --bits 16, 24 or 32")
    if format == "flac" and bits == 32:
        raise BadArgumentError("--bits 32 is float WAV only; use --format wav or --bits 24 for FLAC")
    if format == "mp3" and mp3_bitrate not in MP3_BITRATES:
        raise BadArgumentError(f"--mp3-bitrate {mp3_bitrate}: choose one of {', '.join(map(str, MP3_BITRATES))}")
    if clip_mode not in CLIP_MODES:
        raise BadArgumentError(f"--clip-mode {clip_mode}: choose {', '.join(CLIP_MODES)}")
    if two_stems is not None and _names(stems):
        raise BadArgumentError("--two-stems and --stems: choose one")
    if stems is not None and not _names(stems):
        raise BadArgumentError("--stems: name at least one source (e.g. --stems drums,vocals)")
    check_template(filename)


@dataclass(frozen=True)
class WriteOptions:
    """How a track's stems are written: ``stemsep separate``'s writing options.

    ``format`` wav/flac/mp3 (``mp3_bitrate`` kbit/s, constant), ``bits`` 16/24/32 (32: float WAV;
    not for MP3), ``clip_mode`` rescale (all stems of a track divided by ``max(1, 1.01 * peak)``,
    the peak over every written stem: nothing clips and the stems still add up), clamp (to
    ±0.99) or none, ``filename`` template (variables ``{track}``, ``{trackext}``, ``{folder}``
    (:func:`find_inputs`; empty parts of the rendered path are dropped), ``{stem}``, ``{ext}``),
    ``two_stems`` (that source and ``no_<source>``, the sum of all the others), ``stems`` (a subset), ``keep_rate`` (write at the input's sample rate, not the model's).
    """

    format: str = "wav"
    bits: int = 24
    mp3_bitrate: int = 320
    clip_mode: str = "rescale"
    filename: str = DEFAULT_FILENAME
    two_stems: str | None = None
    stems: tuple[str, ...] | None = None
    keep_rate: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stems", _names(self.stems) if self.stems is not None else None)
        check_write_options(self.format, self.bits, mp3_bitrate=self.mp3_bitrate, clip_mode=self.clip_mode,
                            filename=self.filename, two_stems=self.two_stems, stems=self.stems)

    def output_stems(self, sources: Sequence[str]) -> list[str]:
        """Names of the files written for a model with ``sources`` (one-line error for unknown names)."""
        sources = list(sources)
        if self.two_stems is not None:
            if self.two_stems not in sources:
                raise BadArgumentError(f"--two-stems {self.two_stems}: the model has no such source "
                                       f"(its sources: {', '.join(sources)})")
            return [self.two_stems, f"no_{self.two_stems}"]
        if self.stems:
            unknown = [s for s in self.stems if s not in sources]
            if unknown:
                raise BadArgumentError(f"--stems: unknown source(s) {', '.join(unknown)} "
                                       f"(the model's sources: {', '.join(sources)})")
            return [s for s in sources if s in self.stems]
        return sources

    def mix_outputs(self, stems: torch.Tensor, sources: Sequence[str]) -> list[torch.Tensor]:
        """``(sources, channels, time)`` -> the written stems, in :meth:`output_stems`' order."""
        sources = list(sources)
        if self.two_stems is not None:
            keep = sources.index(self.two_stems)
            rest = [stems[j] for j in range(len(sources)) if j != keep]
            others = rest[0].clone()
            for other in rest[1:]:
                others += other
            return [stems[keep], others]
        return [stems[sources.index(name)] for name in self.output_stems(sources)]

    def _render(self, template: str, track: str, trackext: str, folder: str, stem: str) -> str:
        rel = template.format(track=track, trackext=trackext, folder=folder, stem=stem, ext=self.format)
        return "/".join(part for part in rel.split("/") if part not in ("", "."))

    def paths(self, out: Path, track: str, trackext: str, names: Sequence[str], folder: str = "") -> dict[str, Path]:
        """``{stem: OUT/<rendered template>}``; one-line error for a name leaving ``out`` or a clash."""
        paths = {}
        for name in names:
            rel = self._render(self.filename, track, trackext, folder, name)
            if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise BadArgumentError(f"--filename {self.filename!r}: {rel!r} (track {track!r}) is not a path "
                                       "inside the output directory")
            paths[name] = out / rel
        if len(set(paths.values())) < len(paths):
            raise BadArgumentError(f"--filename {self.filename!r}: two stems of track {track!r} get the same file")
        return paths

    def track_folder(self, out: Path, track: str, trackext: str, folder: str = "") -> Path | None:
        """The folder holding this track's files only: the template's path up to its first folder
        naming ``{track}`` (without ``{stem}``), e.g. ``OUT/<track>`` for ``{track}/{stem}.{ext}``;
        None when the template has none (``{stem}/{track}.{ext}``)."""
        parts = Path(self.filename).parts
        for i, part in enumerate(parts[:-1]):
            if "{track}" in part:
                prefix = "/".join(parts[:i + 1])
                return None if "{stem}" in prefix else out / self._render(prefix, track, trackext, folder, "")
        return None

    def content_key(self) -> dict:
        """The options that change what is written (not where): part of a track's provenance."""
        return {k: v for k, v in asdict(self).items() if k != "filename"}




def track_state(input_path: Path, track: str, targets: dict[str, Path], record: str,
                folder: Path | None = None) -> str:
    """``"todo"``, or ``"done"`` (every target written from this input with these options);
    a :class:`StemsepError` when a target holds the output of another input (or of no recorded one),
    or when the track's ``folder`` holds other stems that another input produced."""
    wanted = json.loads(record)
    if folder is not None and folder.is_dir():
        for sibling in sorted(folder.rglob("*")):
            found = read_provenance(sibling) if sibling.is_file() and sibling not in targets.values() else None
            if found is not None and found.get("input") != wanted["input"]:
                raise StemsepError(f"{input_path}: track {track!r} already has outputs of {found['input']} "
                                   f"({sibling}); add --overwrite to replace them, or write elsewhere with -o")
    existing = [p for p in targets.values() if p.exists()]
    if not existing:
        return "todo"
    records = [read_provenance(p) for p in existing]
    for path, found in zip(existing, records, strict=True):
        if found is None or found.get("input") != wanted["input"]:
            origin = f"of {found['input']}" if found else "with no record of their input"
            raise StemsepError(f"{input_path}: track {track!r} already has outputs {origin} ({path}); "
                               "add --overwrite to replace them, or write elsewhere with -o")
    return "done" if len(existing) == len(targets) and all(r == wanted for r in records) else "todo"




def seed_key(shifts: int, seed: int) -> dict:
    """The seed's part of a run's provenance key: ``{"seed": seed}`` with random shifts, else nothing
    (without shifts the seed changes no sample, and outputs made before it existed stay done)."""
    return {"seed": seed} if shifts > 0 else {}




class StemSink:
    """A track's written stems, block by block: float32 temporaries (raw, interleaved) in the staging
    folder while the peak is tracked (``--clip-mode rescale`` needs it), then the final files."""

    def __init__(self, staging: Path, names: list[str], channels: int, model_rate: int, out_rate: int):
        staging.mkdir(parents=True, exist_ok=True)
        self.names, self.channels, self.peak = names, channels, 0.0
        self.raw = {n: staging / f"{RAW_PREFIX}{i}.f32" for i, n in enumerate(names)}
        self.handles = {n: open(p, "wb") for n, p in self.raw.items()}  # noqa: SIM115 (closed in close())
        self.resamplers = {n: Resampler(model_rate, out_rate, channels) for n in names}

    def add(self, outputs: Sequence[torch.Tensor]) -> None:
        for name, wav in zip(self.names, outputs, strict=True):
            self._put(name, self.resamplers[name](wav.detach().cpu().numpy()))

    def _put(self, name: str, data: np.ndarray) -> None:
        if data.shape[-1]:
            self.peak = max(self.peak, float(np.abs(data).max()))
            self.handles[name].write(np.ascontiguousarray(data.T, dtype=np.float32).tobytes())

    def close(self) -> None:
        for name, handle in self.handles.items():
            if not handle.closed:
                self._put(name, self.resamplers[name].flush())
                handle.close()

    def write(self, staged: dict[str, Path], length: int, samplerate: int, opts: WriteOptions, comment: str) -> None:
        """Convert the temporaries into the final files (``length`` frames each: trimmed or zero-padded)."""
        self.close()
        scale = 1.0 / max(1.01 * self.peak, 1.0) if opts.clip_mode == "rescale" else 1.0
        integer = is_integer_format(opts.format, opts.bits)
        for name in self.names:
            with atomic_path(staged[name]) as tmp, open(self.raw[name], "rb") as raw, \
                    open_writer(tmp, samplerate, self.channels, fmt=opts.format, bits=opts.bits,
                                mp3_bitrate=opts.mp3_bitrate, comment=comment) as writer:
                left = length
                while left > 0:
                    block = np.fromfile(raw, np.float32, count=min(READ_BLOCK, left) * self.channels)
                    block = block.reshape(-1, self.channels)
                    if block.shape[0] == 0:
                        block = np.zeros((min(READ_BLOCK, left), self.channels), np.float32)
                    if scale != 1.0:
                        block *= np.float32(scale)
                    if opts.clip_mode == "clamp":
                        np.clip(block, -0.99, 0.99, out=block)
                    if integer:
                        np.clip(block, -1.0, 1.0, out=block)
                    writer.write(block)
                    left -= block.shape[0]
            self.raw[name].unlink()
