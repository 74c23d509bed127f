"""Reading and writing audio with soundfile (torchaudio.load needs ffmpeg/torchcodec now).

Kept as one module (over 400 lines): the decoder (about 200 lines: soundfile/PyAV fallback,
length checks, one-line errors) is private to the public readers that wrap it, and the writers
(about 100) are imported from here by every caller, so a split would only be re-exported here.

Mixtures to separate (:func:`read_mix`) may be any of :data:`MIX_EXTENSIONS`: libsndfile
(soundfile) decodes WAV/FLAC/AIFF/OGG/Opus/MP3, PyAV (FFmpeg, bundled in its wheels) decodes
M4A/AAC/MP4/WebM/ALAC/Matroska and MUSDB18's ``.stem.mp4`` (first audio stream: the mixture).
One decoder (:func:`_blocks`: soundfile, else PyAV, with the length and error checks) serves
every reader: :func:`iter_mix` converts its blocks one by one (constant memory; soxr's streaming
resampler gives the same samples), :func:`read_mix`, :func:`decode_audio` and :func:`read_stream`
join them. Other sample rates are converted with soxr at quality ``"VHQ"``; a downmix is reported
as a :class:`DownmixWarning` (or recorded in ``iter_mix``'s ``info``), never printed here.
:func:`open_writer` writes WAV/FLAC/MP3 block by block with a comment tag (``stemsep separate``).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from stemsep.errors import BadAudioError
from stemsep.io.files import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac")
# Decoded by libsndfile (soundfile); PyAV is tried as well when libsndfile refuses one of them.
SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".mp3")
# Decoded by PyAV (FFmpeg): MPEG-4 audio (AAC, ALAC), WebM/Matroska, MUSDB18 ``.stem.mp4``.
AV_EXTENSIONS = (".m4a", ".aac", ".mp4", ".m4b", ".alac", ".caf", ".webm", ".mka", ".mkv")
MIX_EXTENSIONS = SOUNDFILE_EXTENSIONS + AV_EXTENSIONS
RESAMPLE_QUALITY = "VHQ"  # soxr's very high quality
# Decoding may fall this far short of the length a container states before it is an error
# (codec priming and padding differ between encoders by up to a few frames).
_SHORTFALL_SAMPLES = 4096
_SUBTYPES = {("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
             ("flac", 16): "PCM_16", ("flac", 24): "PCM_24"}
WRITE_FORMATS = ("wav", "flac", "mp3")
# MPEG-1 layer III bitrates (kbit/s). libsndfile's LAME encoder takes a "compression level" in [0, 1)
# that it maps linearly onto the bitrate range of the MPEG version the sample rate needs, rounded to
# a standard rate (measured, libsndfile 1.2): MPEG-1 (32-48 kHz) 320..32, MPEG-2 (16-24 kHz)
# 160..8, MPEG-2.5 (8-12 kHz) 64..8. A bitrate above a rate's maximum is written at that maximum.
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
READ_BLOCK = 1 << 16  # frames decoded at a time by iter_mix


def mp3_bitrate_range(samplerate: int) -> tuple[int, int]:
    """``(lowest, highest)`` constant bitrate in kbit/s MP3 allows at ``samplerate``."""
    if samplerate >= 32000:
        return 32, 320
    return (8, 160) if samplerate >= 16000 else (8, 64)


def find_audio(folder: str | os.PathLike, stem: str) -> Path | None:
    """``folder/<stem>.wav`` or ``.flac``, whichever exists first, else None."""
    for ext in AUDIO_EXTENSIONS:
        path = Path(folder) / f"{stem}{ext}"
        if path.is_file():
            return path
    return None


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
    """Header of an audio file, or a one-line error naming it."""
    try:
        return sf.info(str(path))
    except FileNotFoundError:
        raise BadAudioError(f"{path}: file not found") from None
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{path}: not a readable audio file ({short_error(err)})") from None


def read_audio(path: str | os.PathLike, *, samplerate: int | None = None, channels: int | None = None,
               start: int = 0, frames: int = -1, check_finite: bool = True) -> tuple[torch.Tensor, int]:
    """Read ``frames`` samples from ``start`` as a float32 tensor ``(channels, time)``.

    ``samplerate`` and ``channels``, when given, are checked (not converted): a mismatch is a
    :class:`BadAudioError` naming the file. Mono files are refused where stereo is expected.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise BadAudioError(f"{path}: file not found") from None
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{path}: not a readable audio file ({short_error(err)})") from None
    if samplerate is not None and sr != samplerate:
        raise BadAudioError(f"{path}: sample rate is {sr} Hz, expected {samplerate} Hz")
    if channels is not None and data.shape[1] != channels:
        raise BadAudioError(f"{path}: has {data.shape[1]} channel(s), expected {channels}")
    if data.shape[0] == 0 and frames != 0:
        raise BadAudioError(f"{path}: audio is empty (zero samples)")
    if check_finite and not np.isfinite(data).all():
        raise BadAudioError(f"{path}: contains NaN or Inf samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def write_audio(path: str | os.PathLike, wav: torch.Tensor | np.ndarray, samplerate: int, *,
                bits: int = 24, fmt: str | None = None) -> Path:
    """Write ``(channels, time)`` audio atomically as WAV or FLAC (format from the suffix).

    Integer formats clip to [-1, 1]; 32-bit WAV is stored as float.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    subtype = _SUBTYPES.get((fmt, bits))
    if subtype is None:
        raise BadAudioError(f"{path}: cannot write {bits}-bit {fmt!r} (choose wav 16/24/32 or flac 16/24)")
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    data = np.asarray(data, dtype=np.float32).T
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, samplerate, subtype=subtype, format=fmt.upper())
    return path


def open_writer(path: str | os.PathLike, samplerate: int, channels: int, *, fmt: str = "wav", bits: int = 24,
                mp3_bitrate: int = 320, comment: str | None = None) -> sf.SoundFile:
    """An open :class:`soundfile.SoundFile` writing ``path`` block by block (float32 ``(time, channels)``
    blocks): WAV 16/24/32-bit (32: float), FLAC 16/24-bit, or constant-bitrate MP3 (LAME through
    libsndfile; ``bits`` does not apply). ``comment`` is stored in the file's tags (WAV INFO, FLAC
    Vorbis comment, MP3 ID3). The caller makes it atomic (write a temporary, then rename) and
    clips integer formats."""
    fmt = fmt.lower()
    extra: dict = {}
    if fmt == "mp3":
        if mp3_bitrate not in MP3_BITRATES:
            raise BadAudioError(f"{path}: MP3 bitrate {mp3_bitrate} kbit/s is not one of "
                                f"{', '.join(map(str, MP3_BITRATES))}")
        subtype = "MPEG_LAYER_III"
        low, high = mp3_bitrate_range(int(samplerate))
        level = (high - min(max(mp3_bitrate, low), high)) / (high - low)
        extra = dict(compression_level=min(level, 0.999), bitrate_mode="CONSTANT")
    else:
        subtype = _SUBTYPES.get((fmt, bits))
        if subtype is None:
            raise BadAudioError(f"{path}: cannot write {bits}-bit {fmt!r} (choose wav 16/24/32 or flac 16/24)")
    try:
        handle = sf.SoundFile(str(path), "w", int(samplerate), int(channels), subtype=subtype, format=fmt.upper(),
                              **extra)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BadAudioError(f"{path}: cannot write {fmt.upper()} at {samplerate} Hz ({short_error(err)})") from None
    if comment is not None:
        handle.comment = comment
    return handle


def is_integer_format(fmt: str, bits: int) -> bool:
    """Whether samples are stored as integers (clipped to [-1, 1]); float WAV and MP3 are not clipped here."""
    return fmt.lower() in ("wav", "flac") and bits != 32


def read_comment(path: str | os.PathLike) -> str | None:
    """The comment tag :func:`open_writer` stored in ``path``, or None (no tag, or not readable)."""
    try:
        with sf.SoundFile(str(path)) as handle:
            return handle.comment or None
    except (RuntimeError, sf.LibsndfileError, OSError):
        return None


def short_error(err: Exception) -> str:
    """The reason in a soundfile/libsndfile error's last line, without "Error opening <file>: "."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(": ", 1)[-1] if "Error opening" in text else text


@dataclass(frozen=True)
class MixInfo:
    """What :func:`probe_mix` learns from a header: rate, channels and (stated or estimated) frames."""

    samplerate: int
    channels: int
    frames: int


class DownmixWarning(UserWarning):
    """More channels than a model takes were mixed down (``<file>: N channels downmixed to stereo``)."""


def is_stem_mp4(path: str | os.PathLike) -> bool:
    """MUSDB18's multi-stream ``<track>.stem.mp4`` (stream 0 is the mixture)."""
    return Path(path).name.lower().endswith(".stem.mp4")


def _uses_av(path: Path) -> bool:
    return path.suffix.lower() not in SOUNDFILE_EXTENSIONS


def probe_mix(path: str | os.PathLike) -> MixInfo:
    """Rate, channels and frames of a file :func:`read_mix` can read (its first audio stream)."""
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(f"{path}: file not found")
    if not _uses_av(path):
        try:
            info = sf.info(str(path))
            return MixInfo(info.samplerate, info.channels, info.frames)
        except (RuntimeError, sf.LibsndfileError):
            pass  # PyAV may still read it; its error is reported below otherwise
    with _open_av(path) as container:
        stream = _first_audio(path, container)
        return MixInfo(stream.codec_context.sample_rate, stream.codec_context.channels,
                       _stated_frames(container, stream) or 0)


def read_mix(path: str | os.PathLike, samplerate: int, channels: int = 2) -> torch.Tensor:
    """A mixture to separate as float32 ``(channels, time)`` at ``samplerate``, from any supported file.

    Mono is duplicated; more channels than ``channels`` are downmixed (a :class:`DownmixWarning`);
    other rates are resampled with soxr (quality ``"VHQ"``). A file that cannot be decoded, is
    empty, holds NaN/Inf, or decodes shorter than its container states is a one-line
    :class:`BadAudioError` naming it.
    """
    path = Path(path)
    data, sr = _read_checked(path)
    data, note = _to_channels(data, channels, str(path))
    if note:
        warnings.warn(note, DownmixWarning, stacklevel=2)
    return resample(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), sr, samplerate)


def decode_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Any file :func:`read_mix` reads, as float32 ``(channels, time)`` at its own rate and channel
    count (nothing converted), and the rate; a ``.stem.mp4`` gives its first stream (the mixture).

    Errors as :func:`read_mix`: one line naming the file (missing, undecodable, empty, NaN/Inf, or
    decoding shorter than the container states).
    """
    data, sr = _read_checked(Path(path))
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), sr


class Resampler:
    """Streaming :func:`resample`: blocks ``(channels, n)`` in, blocks out, as one whole-signal call
    would give (soxr's ``ResampleStream``, same quality; bit-identical, measured)."""

    def __init__(self, source: int, target: int, channels: int):
        self.identity = source == target
        if not self.identity:
            import soxr

            self._stream = soxr.ResampleStream(source, target, channels, dtype="float32", quality=RESAMPLE_QUALITY)
        self.channels = channels

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self.identity:
            return block
        data = np.ascontiguousarray(block.T, dtype=np.float32)
        return np.ascontiguousarray(self._stream.resample_chunk(data, last=last).T)

    def flush(self) -> np.ndarray:
        return self(np.zeros((self.channels, 0), np.float32), last=True)


def iter_mix(path: str | os.PathLike, samplerate: int, channels: int = 2, block: int = READ_BLOCK,
             info: dict | None = None) -> Iterator[np.ndarray]:
    """:func:`read_mix` block by block: float32 ``(channels, n)`` blocks at ``samplerate`` whose
    concatenation equals ``read_mix``'s result, holding one block in memory (soundfile reads
    ``block`` frames at a time; PyAV decodes frame by frame; soxr resamples as a stream).
    Errors are :func:`read_mix`'s, raised when met (a truncated file: after its last block).
    ``info``, when given, receives the input's ``samplerate`` and decoded ``frames``, and ``note``:
    ``"<file>: N channels downmixed to stereo"`` when it was (for the caller to report; without
    ``info`` it is a :class:`DownmixWarning`)."""
    path = _existing_file(path)
    resampler, count, noted = None, 0, False
    for data, sr in _blocks(path, block):
        if not np.isfinite(data).all():
            raise BadAudioError(f"{path}: contains NaN or Inf samples")
        if resampler is None:
            resampler = Resampler(sr, samplerate, channels)
        data, note = _to_channels(data, channels, str(path))
        if note and not noted:
            noted = True
            if info is not None:
                info["note"] = note
            else:
                warnings.warn(note, DownmixWarning, stacklevel=2)
        count += data.shape[1]
        if info is not None:
            info["samplerate"], info["frames"] = sr, count
        out = resampler(np.ascontiguousarray(data, dtype=np.float32))
        if out.shape[1]:
            yield out
    if count == 0:
        raise BadAudioError(f"{path}: audio is empty (zero samples)")
    tail = resampler.flush()
    if tail.shape[1]:
        yield tail


def resample(wav: torch.Tensor, source: int, target: int) -> torch.Tensor:
    """``(..., time)`` audio from ``source`` Hz to ``target`` Hz with soxr (quality ``"VHQ"``), on CPU."""
    if source == target:
        return wav
    import soxr

    flat = wav.detach().cpu().reshape(-1, wav.shape[-1]).numpy().astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(flat.T), source, target, quality=RESAMPLE_QUALITY).T
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(*wav.shape[:-1], -1).to(wav.device)


# ---------------------------------------------------------------- the decoder
def _existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a one-line :class:`BadAudioError`: file not found, or not a file."""
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    return path


def _read_checked(path: Path) -> tuple[np.ndarray, int]:
    """The joined blocks of an existing file, non-empty and finite (else a one-line error)."""
    data, sr, _ = _join(_blocks(_existing_file(path), None))
    if data.shape[1] == 0:
        raise BadAudioError(f"{path}: audio is empty (zero samples)")
    if not np.isfinite(data).all():
        raise BadAudioError(f"{path}: contains NaN or Inf samples")
    return data, sr


def _join(blocks) -> tuple[np.ndarray, int, int | None]:
    """A decoder's blocks as one ``(channels, time)`` array, the rate, and the frames the file
    states (the decoder's return value)."""
    chunks, sr = [], 0
    while True:
        try:
            data, sr = next(blocks)
        except StopIteration as end:
            stated = end.value
            break
        chunks.append(data)
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    return data, sr, stated


def _blocks(path: Path, block: int | None):
    """The decoder: ``((channels, n) float32, rate)`` blocks of the first audio stream, returning
    the frames the file states after checking the decoded length against them.

    soundfile first for its formats (``block`` frames at a time; ``None``: the whole file in one
    read), PyAV (frame by frame) for the others and for what libsndfile cannot open; a whole-file
    read that libsndfile fails goes to PyAV too, a block read stops with a one-line error.
    """
    if _uses_av(path):
        return (yield from _av_blocks(path))
    try:
        info = sf.info(str(path))
        if block is None:
            whole = sf.read(str(path), dtype="float32", always_2d=True)[0]
        else:
            handle = sf.SoundFile(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        return (yield from _av_instead(path, err))
    stated = _stated_frames_sf(info)
    if block is None:
        decoded = whole.shape[0]
        yield whole.T, info.samplerate
    else:
        decoded = 0
        with handle:
            try:
                while (data := handle.read(block, dtype="float32", always_2d=True)).shape[0]:
                    decoded += data.shape[0]
                    yield np.ascontiguousarray(data.T), info.samplerate
            except (RuntimeError, sf.LibsndfileError) as err:
                raise BadAudioError(f"{path}: cannot decode its audio ({short_error(err)})") from None
    # MP3 lengths are estimated when no Xing/LAME header states them: only a large shortfall counts
    _check_length(path, decoded, stated, info.samplerate, fraction=10 if info.format == "MP3" else 100)
    return stated


def _av_instead(path: Path, err: Exception):
    """PyAV's blocks of a file libsndfile refused; libsndfile's reason when PyAV fails too, except
    where FFmpeg's says more (libsndfile's MP3 reader reports "File does not exist")."""
    try:
        return (yield from _av_blocks(path))
    except BadAudioError as av_err:
        reason = short_error(err)
        if "unsupported audio codec" in str(av_err) or "does not exist" in reason:
            raise
        raise BadAudioError(f"{path}: not a readable audio file ({reason})") from None


def _av_blocks(path: Path, index: int | None = None):
    """PyAV's half of :func:`_blocks`: the frames of the first audio stream (``index``: of audio
    stream ``index``, errors naming it), then the length check; returns the stated frames."""
    with _open_av(path) as container:
        stream = _first_audio(path, container) if index is None else _audio_stream(path, container, index)
        sr = stream.codec_context.sample_rate
        decoded = 0
        with _av_decode_errors(path, stream, index):
            for data in _decoded_frames(container, stream):
                decoded += data.shape[1]
                yield data, sr
        stated = _stated_frames_av(container, stream) if index is None else _stated_frames(container, stream)
    if decoded == 0:
        what = "audio is" if index is None else f"audio stream {index} is"
        raise BadAudioError(f"{path}: {what} empty (no decodable samples)")
    _check_length(path, decoded, stated, sr)
    return stated


def _stated_frames_sf(info: sf._SoundFileInfo) -> int:
    """Frames the header states; for a WAV whose data chunk is cut short, libsndfile notes the
    header's size in its log ("data : N (should be M)") and reports the shorter length."""
    match = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info or "", re.MULTILINE)
    if match and info.format in ("WAV", "WAVEX", "RF64", "W64"):
        block = re.search(r"Block Align\s*:\s*(\d+)", info.extra_info or "")
        if block and int(block.group(1)) > 0:
            return max(info.frames, int(match.group(1)) // int(block.group(1)))
    return info.frames


def _check_length(path: Path, decoded: int, stated: int | None, samplerate: int, fraction: int = 100) -> None:
    """A one-line error when ``decoded`` falls short of ``stated`` by more than ``1/fraction`` of it."""
    if stated and decoded < stated - max(_SHORTFALL_SAMPLES, stated // fraction):
        raise BadAudioError(f"{path}: decoding stopped at {decoded / samplerate:.2f} s of the "
                            f"{stated / samplerate:.2f} s its header states (truncated or damaged file?)")


def _av_error(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


def _open_av(path: Path):
    import av

    try:
        return av.open(str(path))
    except FileNotFoundError:
        raise BadAudioError(f"{path}: file not found") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise BadAudioError(f"{path}: not a readable audio file ({_av_error(err)})") from None


def _first_audio(path: Path, container):
    """The first audio stream, refused with a one-line error when FFmpeg has no decoder for it."""
    if not container.streams.audio:
        raise BadAudioError(f"{path}: holds no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        raise BadAudioError(f"{path}: unsupported audio codec (no decoder for its first audio stream)")
    if not stream.codec_context.sample_rate:
        raise BadAudioError(f"{path}: its audio stream states no sample rate")
    return stream


def _audio_stream(path: Path, container, index: int):
    """Audio stream ``index`` (:func:`read_stream`), refused with a one-line error naming it."""
    streams = container.streams.audio
    if not 0 <= index < len(streams):
        raise BadAudioError(f"{path}: has {len(streams)} audio stream(s), no stream {index}")
    stream = streams[index]
    if stream.codec_context is None or not stream.codec_context.sample_rate:
        raise BadAudioError(f"{path}: audio stream {index}: unsupported codec or no sample rate")
    return stream


def _stated_frames(container, stream) -> int | None:
    """Frames the container states for ``stream`` (its duration), or None."""
    rate = stream.codec_context.sample_rate
    if stream.duration and stream.time_base:
        return int(round(stream.duration * stream.time_base * rate))
    if container.duration:
        import av

        return int(round(container.duration / av.time_base * rate))
    return None


def _stated_frames_av(container, stream) -> int | None:
    """:func:`_stated_frames`, except for raw ADTS AAC / MP3 streams: FFmpeg estimates their duration
    from the bitrate (not a stated length)."""
    return None if container.format.name in ("aac", "mp3") else _stated_frames(container, stream)


def _decoded_frames(container, stream) -> Iterator[np.ndarray]:
    """Every frame of ``stream`` as float32 planar ``(channels, n)`` arrays, the resampler flushed at
    the end (PyAV's errors propagate)."""
    import av

    resampler = av.AudioResampler(format="fltp")
    for frame in container.decode(stream):
        for f in resampler.resample(frame):
            yield f.to_ndarray().astype(np.float32, copy=False)
    for f in resampler.resample(None):
        yield f.to_ndarray().astype(np.float32, copy=False)


@contextlib.contextmanager
def _av_decode_errors(path: Path, stream, index: int | None = None):
    """PyAV's decoding errors as one-line :class:`BadAudioError` (naming audio stream ``index`` if given)."""
    import av

    try:
        yield
    except av.error.DecoderNotFoundError as err:
        if index is not None:
            raise BadAudioError(f"{path}: audio stream {index}: cannot decode ({_av_error(err)})") from None
        raise BadAudioError(f"{path}: unsupported codec {stream.codec_context.name!r} "
                            f"({_av_error(err)})") from None
    except (av.error.FFmpegError, ValueError) as err:
        where = "cannot decode its audio" if index is None else f"audio stream {index}: cannot decode"
        raise BadAudioError(f"{path}: {where} ({_av_error(err)})") from None


# Downmix to stereo (ITU-R BS.775 coefficients, then normalised so a full-scale input cannot clip),
# for the usual WAV/FFmpeg channel orders; other counts: even channels left, odd right.
_C = 0.7071
_DOWNMIX = {
    3: [[1, 0, _C], [0, 1, _C]],  # L R C
    4: [[1, 0, _C, 0], [0, 1, 0, _C]],  # L R BL BR (quad)
    5: [[1, 0, _C, _C, 0], [0, 1, _C, 0, _C]],  # L R C BL BR
    6: [[1, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C]],  # 5.1: L R C LFE BL BR
    8: [[1, 0, _C, 0, _C, 0, _C, 0], [0, 1, _C, 0, 0, _C, 0, _C]],  # 7.1: L R C LFE BL BR SL SR
}


def to_channels(data: np.ndarray, channels: int, *, name: str = "input") -> np.ndarray:
    """``(have, time)`` -> ``(channels, time)``: mono duplicated, more channels downmixed (a
    :class:`DownmixWarning` naming ``name``); anything else is a :class:`BadAudioError`."""
    data, note = _to_channels(data, channels, name)
    if note:
        warnings.warn(note, DownmixWarning, stacklevel=2)
    return data


def _to_channels(data: np.ndarray, channels: int, name: str) -> tuple[np.ndarray, str | None]:
    """:func:`to_channels` and its note (``"<name>: N channels downmixed to stereo"``), or None."""
    have = data.shape[0]
    if have == channels:
        return data, None
    if have == 1:
        return np.repeat(data, channels, axis=0), None
    if channels == 1:
        return data.mean(0, keepdims=True), f"{name}: {have} channels averaged to mono"
    if channels != 2 or have < 2:
        raise BadAudioError(f"{name}: has {have} channel(s), the model takes {channels} (or mono)")
    matrix = np.asarray(_DOWNMIX.get(have) or [[1.0 - i % 2 for i in range(have)],
                                                [float(i % 2) for i in range(have)]], dtype=np.float32)
    matrix /= matrix.sum(1, keepdims=True)
    return matrix @ data, f"{name}: {have} channels downmixed to stereo"


# ---------------------------------------------------------------- multi-stream files (MUSDB18 .stem.mp4)
# The NI Stems order of MUSDB18's ``.stem.mp4``: audio stream k holds this source.
STEM_MP4_STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}


def probe_streams(path: str | os.PathLike) -> list[MixInfo]:
    """Rate, channels and stated frames of every audio stream of a PyAV-readable file (header only)."""
    path = Path(path)
    if not path.is_file():
        raise BadAudioError(f"{path}: file not found")
    with _open_av(path) as container:
        if not container.streams.audio:
            raise BadAudioError(f"{path}: holds no audio stream")
        return [MixInfo(s.codec_context.sample_rate or 0, s.codec_context.channels or 0,
                        _stated_frames(container, s) or 0) for s in container.streams.audio]


def read_stream(path: str | os.PathLike, index: int) -> tuple[torch.Tensor, int]:
    """Audio stream ``index`` of a file as float32 ``(channels, time)`` at its own rate, and the rate.

    For MUSDB18's ``.stem.mp4``: stream 0 is the mixture, 1-4 drums, bass, other, vocals
    (:data:`STEM_MP4_STREAMS`). Decoded audio is cut to the length the container states (AAC pads
    its last frame); a stream that decodes shorter than stated, is empty, holds NaN/Inf or cannot
    be decoded is a one-line :class:`BadAudioError` naming the file and the stream.
    """
    path = _existing_file(path)
    data, sr, stated = _join(_av_blocks(path, index))
    if stated:
        data = data[:, :stated]
    if not np.isfinite(data).all():
        raise BadAudioError(f"{path}: audio stream {index} contains NaN or Inf samples")
    return torch.from_numpy(np.ascontiguousarray(data)), sr
