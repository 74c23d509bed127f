"""The separation network contract: what every stemsep tool asks of a network.

A separation network is an ``nn.Module`` with

* ``sources: list[str]`` — the stems it returns, in order;
* ``samplerate: int`` and ``audio_channels: int`` — what its input must be;
* ``forward(mix)`` mapping ``(batch, channels, time)`` to ``(batch, sources, channels, time)``.

Optional attributes, read only through the functions below (never probed elsewhere):

* ``segment`` (seconds, float or Fraction): the length it was trained on; chunked inference
  cuts long inputs into pieces of this length (default: the whole input at once);
* ``valid_length(length) -> int``: the input length it needs to return ``length`` samples;
* ``use_train_segment: bool``: it pads every input to its training segment itself;
* ``init_args: dict``: its constructor arguments, so checkpoints can rebuild it
  (:func:`records_init_args` sets it);
* ``models`` and ``weights``: a bag of member networks mixed per source with ``weights``;
* ``stream_step(chunk, state) -> (stems, state)`` with ``stream_hop`` and ``stream_latency``: a causal,
  stateful network streamed step by step (see :class:`StreamStep`);
* ``export_parts() -> ExportParts``: a spectral network split into a real-valued core (what
  ``stemsep export`` traces) and the front end that runs around it in PyTorch (STFT before,
  masking / ISTFT after); see :class:`ExportParts` and :class:`ExportFrontEnd`.

This module is the bottom layer with :mod:`stemsep.errors`: every package may import it, and it
imports nothing else of stemsep.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from stemsep.errors import StemsepError

DEFAULT_SOURCES = ["drums", "bass", "other", "vocals"]


def default_source_names(count: int | None = None) -> list[str]:
    """Names for ``count`` unnamed stems (default 4): MUSDB's four, else ``source0``, ``source1``, ..."""
    count = len(DEFAULT_SOURCES) if count is None else int(count)
    return list(DEFAULT_SOURCES) if count == len(DEFAULT_SOURCES) else [f"source{i}" for i in range(count)]


CONTRACT_ATTRIBUTES = ("sources", "samplerate", "audio_channels")


@runtime_checkable
class SeparationNetwork(Protocol):
    """``(batch, channels, time)`` -> ``(batch, sources, channels, time)`` with its stems named."""

    sources: list[str]
    samplerate: int
    audio_channels: int

    def forward(self, mix: torch.Tensor) -> torch.Tensor: ...


class ExportFrontEnd(Protocol):
    """What runs in PyTorch around an exported core; rebuilt on load as ``cls(**config())``.

    The class must live under ``stemsep.models`` (the export loader imports nothing else).
    """

    def config(self) -> dict[str, Any]:
        """JSON-able constructor keyword arguments."""
        ...

    def prepare(self, mix: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        """``mix (B, C, L)`` -> the core's inputs (real tensors) and a state for :meth:`finish`."""
        ...

    def finish(self, outputs: tuple[torch.Tensor, ...], state: Any, length: int) -> torch.Tensor:
        """The core's outputs (and the state) -> waveforms ``(B, S, C, length)``."""
        ...


class ExportParts(NamedTuple):
    """A network split for export: ``core(*inputs) -> tuple of outputs``, real tensors only, dim 0
    of every input the (dynamic) batch; ``front_end`` prepares the inputs and finishes the outputs;
    ``input_names`` / ``output_names`` name the graph's inputs and outputs."""

    core: torch.nn.Module
    front_end: ExportFrontEnd
    input_names: list[str]
    output_names: list[str]


def check_network(net: Any, origin: str | None = None) -> None:
    """One-line error unless ``net`` follows the contract (attributes present, sources non-empty)."""
    where = f"{origin}: " if origin else ""
    name = type(net).__name__
    if not isinstance(net, torch.nn.Module):
        raise StemsepError(f"{where}{name} is not a torch.nn.Module (a separation network must be one)")
    missing = [attr for attr in CONTRACT_ATTRIBUTES if not hasattr(net, attr)]
    if missing:
        raise StemsepError(f"{where}network {name} lacks attribute(s) {', '.join(missing)} "
                           "(a separation network needs sources, samplerate and audio_channels)")
    if not net.sources:
        raise StemsepError(f"{where}network {name} has an empty sources list")


def check_same_kind(nets: Sequence[Any], names: Sequence[str] | None = None) -> None:
    """One-line error unless every network has the first one's sources, sample rate and channels.

    ``names`` label the networks in the message (file names; default ``model <index>``).
    """
    labels = list(names) if names is not None else [f"model {i}" for i in range(len(nets))]
    first = nets[0]
    for label, net in zip(labels[1:], nets[1:], strict=True):
        for attr in CONTRACT_ATTRIBUTES:
            mine, theirs = _comparable(getattr(net, attr)), _comparable(getattr(first, attr))
            if mine != theirs:
                raise StemsepError(f"{label}: {attr} {getattr(net, attr)!r} differs from {labels[0]}'s "
                                   f"{getattr(first, attr)!r}; a bag needs models of the same kind (--ensemble MODE "
                                   "combines models of any kinds)")


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def segment_of(net: Any) -> float | Fraction | None:
    """The network's training segment in seconds, or ``None`` (whole inputs)."""
    return getattr(net, "segment", None)


def uses_train_segment(net: Any) -> bool:
    """Whether the network pads every input to its training segment itself (HT Demucs)."""
    return bool(getattr(net, "use_train_segment", False))


def input_length(net: Any, length: int) -> int:
    """Samples the network takes to return ``length`` samples (its ``valid_length``, if any)."""
    valid_length = getattr(net, "valid_length", None)
    return int(valid_length(length)) if callable(valid_length) else length


def bag_members(net: Any) -> list[tuple[Any, list[float]]] | None:
    """``[(member, per-source weights), ...]`` of a bag of networks, ``None`` for a single one."""
    models, weights = getattr(net, "models", None), getattr(net, "weights", None)
    if models is None or weights is None:
        return None
    return list(zip(models, weights, strict=True))


class StreamStep(NamedTuple):
    """A causal, stateful network's streaming contract, read by :func:`stream_step_of`.

    ``step(chunk, state)``: ``chunk (batch, audio_channels, hop)``, the next ``hop`` input samples, and
    the state the previous step returned (``None`` at the start of a stream) -> ``(stems (batch,
    sources, audio_channels, hop), next state)``. Fed a whole input step by step (its end padded with
    zeros), the stems concatenated equal the offline ``forward`` of that input delayed by ``latency``
    samples: their first ``latency`` samples are the stems of silence before the start."""

    step: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
    hop: int
    latency: int


def stream_step_of(net: Any) -> StreamStep | None:
    """The network's :class:`StreamStep` (its ``stream_step``, ``stream_hop`` samples per step,
    ``stream_latency`` samples of delay), or ``None`` when it does not declare all three (or its
    ``stream_hop`` / ``stream_latency`` is None)."""
    step = getattr(net, "stream_step", None)
    hop, latency = getattr(net, "stream_hop", None), getattr(net, "stream_latency", None)
    if not callable(step) or hop is None or latency is None:
        return None
    if int(hop) <= 0 or int(latency) < 0:
        raise StemsepError(f"{type(net).__name__}: stream_hop must be positive and stream_latency not "
                           f"negative, got {hop} and {latency}")
    return StreamStep(step, int(hop), int(latency))


def export_parts(net: Any) -> ExportParts | None:
    """The network's :class:`ExportParts` (its ``export_parts()``), or ``None`` when it has none."""
    method = getattr(net, "export_parts", None)
    return method() if callable(method) else None


def describe(net: Any) -> dict[str, Any]:
    """The contract of ``net`` as plain values: sources, sample rate, channels."""
    check_network(net)
    return {"sources": list(net.sources), "samplerate": int(net.samplerate),
            "audio_channels": int(net.audio_channels)}


def network_config(net: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a network built in Python.

    Networks that record their constructor arguments (:func:`records_init_args`; all of
    stemsep's do) can be rebuilt from a checkpoint; others are recorded by class only.
    """
    cls = type(net)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(getattr(net, "init_args", {}))}


def records_init_args(cls: type) -> type:
    """Class decorator: each instance keeps its constructor arguments in ``init_args``.

    Checkpoints store them with the class path, so a network is rebuilt without any pickled
    object. A subclass records its own arguments (decorate it too).
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        if type(self) is cls:
            arguments = dict(list(bound.arguments.items())[1:])
            extra = arguments.pop(next((p.name for p in signature.parameters.values()
                                        if p.kind is p.VAR_KEYWORD), ""), {})
            self.init_args = {**arguments, **extra}

    cls.__init__ = __init__
    return cls
