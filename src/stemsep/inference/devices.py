"""Live audio for ``stemsep stream``: sound cards through ``sounddevice`` (PortAudio), the optional
extra ``live``.

Everything that touches PortAudio is here, so that the rest of the streaming command runs (and is
tested) without it. Each way it can be missing is a one-line :class:`LiveAudioError` that says how
to fix it: the package (``pip install 'stemsep[live]'``), the PortAudio library (``apt-get install
libportaudio2``), a machine with no sound devices, or a ``--input-device`` / ``--output-device``
that names none of them (``stemsep stream --list-devices`` shows what there is).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from stemsep.errors import StemsepError

INSTALL_PACKAGE = "pip install 'stemsep[live]'"
INSTALL_PORTAUDIO = "apt-get install libportaudio2 (macOS: brew install portaudio)"


class LiveAudioError(StemsepError):
    """Live audio is not available: no sounddevice, no PortAudio, no such device."""


def sounddevice() -> ModuleType:
    """The ``sounddevice`` module, or a one-line error saying what is missing and how to install it."""
    try:
        import sounddevice as sd
    except ImportError:
        raise LiveAudioError(f"live audio needs the optional package sounddevice: {INSTALL_PACKAGE}") from None
    except OSError as err:  # the package is there, PortAudio's shared library is not
        raise LiveAudioError(f"live audio needs the PortAudio library, which sounddevice cannot load ({err}): "
                             f"{INSTALL_PORTAUDIO}") from None
    return sd


@dataclass(frozen=True)
class Device:
    """One PortAudio device as ``--list-devices`` shows it."""

    index: int
    name: str
    inputs: int
    outputs: int
    samplerate: float

    def __str__(self) -> str:
        return (f"{self.index:>3}  {self.name}  ({self.inputs} in, {self.outputs} out, "
                f"{self.samplerate:g} Hz default)")


def list_devices() -> list[Device]:
    """Every device PortAudio sees (may be empty: a machine without sound cards)."""
    sd = sounddevice()
    return [Device(i, str(d["name"]), int(d["max_input_channels"]), int(d["max_output_channels"]),
                   float(d["default_samplerate"])) for i, d in enumerate(sd.query_devices())]


def find_device(spec: str | int, kind: str) -> Device:
    """The device named by ``--input-device`` / ``--output-device`` (``kind``: ``"input"``/``"output"``):
    an index, an exact name, or a part of one name (case-insensitive); it must have ``kind`` channels."""
    option = f"--{kind}-device {spec}"
    try:
        devices = list_devices()
    except LiveAudioError as err:
        raise LiveAudioError(f"{option}: {err}") from None
    if not devices:
        raise LiveAudioError(f"{option}: PortAudio finds no audio devices on this machine (no sound card, "
                             "or no access to one); stream a file or stdin ('-') instead")
    usable = [d for d in devices if (d.inputs if kind == "input" else d.outputs) > 0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        found = [d for d in usable if d.index == int(text)]
    else:
        found = [d for d in usable if d.name.lower() == text.lower()] or \
                [d for d in usable if text.lower() in d.name.lower()]
    if len(found) == 1:
        return found[0]
    names = ", ".join(f"{d.index}: {d.name}" for d in usable) or f"none has {kind} channels"
    problem = "matches several devices" if found else f"no such {kind} device"
    raise LiveAudioError(f"{option}: {problem} ({names}); see `stemsep stream --list-devices`")


def _open(kind: str, option: str, device: Device, samplerate: int, channels: int, block: int):
    """A sounddevice ``InputStream``/``OutputStream`` (``kind``) on ``device``, or a one-line error
    (a device that does not take the model's rate or channel count, or is busy)."""
    sd = sounddevice()
    try:
        return getattr(sd, kind)(device=device.index, samplerate=samplerate, channels=channels, blocksize=block,
                                 dtype="float32")
    except sd.PortAudioError as err:
        raise LiveAudioError(f"--{option}-device {device.name}: cannot open it at {samplerate} Hz with {channels} "
                             f"channel(s) ({err})") from None


class Capture:
    """Blocks from an input device, ``(channels, n)`` float32 at ``samplerate``, until closed or
    ``seconds`` have been read (None: until Ctrl-C). ``overflows`` counts blocks PortAudio reported
    as overrun (input dropped because a block was read late)."""

    def __init__(self, device: Device, samplerate: int, channels: int, block: int, seconds: float | None):
        self.block, self.overflows = block, 0
        self.left = None if seconds is None else int(round(seconds * samplerate))
        self.stream = _open("InputStream", "input", device, samplerate, channels, block)

    def __iter__(self) -> Iterator[np.ndarray]:
        with self.stream:
            while self.left is None or self.left > 0:
                count = self.block if self.left is None else min(self.block, self.left)
                data, overflowed = self.stream.read(count)
                self.overflows += bool(overflowed)
                if self.left is not None:
                    self.left -= count
                yield np.ascontiguousarray(data.T)

    def close(self) -> None:
        """Close the device (also when no block was read: an error before the first one)."""
        self.stream.close()


class Playback:
    """An output device fed ``(channels, n)`` blocks; ``underflows`` counts blocks that came too late."""

    def __init__(self, device: Device, samplerate: int, channels: int, block: int):
        self.underflows = 0
        self.stream = _open("OutputStream", "output", device, samplerate, channels, block)
        self.stream.start()

    def write(self, block: np.ndarray) -> None:
        if block.shape[-1]:
            self.underflows += bool(self.stream.write(np.ascontiguousarray(block.T, dtype=np.float32)))

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()
