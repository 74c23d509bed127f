"""Chunked, batched separation of long mixtures (overlap-add with triangular cross-fades).

A separation network sees a fixed-length window (its training ``segment``). A long mix is
cut into chunks of ``segment`` seconds every ``(1 - overlap) * segment`` seconds; each chunk is
given the context the network wants around it (``net.valid_length``: the real neighbouring
samples, zeros past the ends), the network's output is trimmed back to the chunk and the
chunks are blended with triangular weights. Results equal ``demucs.apply.apply_model`` for
the same weights and settings, but chunks — of one input or of many — go through the network
``batch_size`` at a time, which is what keeps a GPU busy.

Memory stays bounded: besides the output accumulator ``(B, S, C, T)`` and its 1-D weight sum,
at most ``batch_size`` chunks of input and output exist at a time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral

import torch
from torch import nn

from stemsep.contract import bag_members, input_length, segment_of, uses_train_segment
from stemsep.errors import BadArgumentError

SHIFT_SECONDS = 0.5  # largest random time shift of the shift trick (test-time augmentation)


@dataclass(frozen=True)
class _Chunk:
    """One network call's worth of work: item ``item`` of the mix, samples ``[offset, offset+length)``."""

    item: int
    offset: int
    length: int


@dataclass(frozen=True)
class WindowPlan:
    """Sliding windows for a file separated window by window (:mod:`stemsep.inference.windowed`):
    window starts are multiples of ``align`` (every chunk grid's stride, so each window's chunks
    are the whole-file chunks), and ``margin`` samples each side of what a window emits give every
    chunk covering an emitted sample its full input. ``length``: samples per window."""

    align: int
    margin: int
    length: int


@dataclass(frozen=True)
class Chunking:
    """How a mix is cut into network calls: the one place the chunk geometry is worked out.

    ``segment``: chunk length in seconds (default: the network's ``segment``, else the whole
    input); ``overlap``: fraction of a chunk shared with the next, in [0, 1); ``shifts``: number of
    random time shifts (up to :data:`SHIFT_SECONDS`) whose results are averaged, their offsets drawn
    from ``random.Random(seed)`` made afresh for each separation; ``batch_size``: chunks per network
    call; ``transition_power`` (>= 1): sharper cross-fades; ``split=False``: each input in one call.

    The options are checked once, when the value is built (a one-line
    :class:`~stemsep.errors.BadArgumentError` naming the option). For a given network it answers
    the geometry: :meth:`samples`, :meth:`stride`, :meth:`input_length` (the chunk plus its
    context), :meth:`plan`, :meth:`chunk_count`, :meth:`window_plan`. Nothing else in stemsep
    computes a stride or a context.
    """

    segment: float | Fraction | None = None
    overlap: float = 0.25
    shifts: int = 0
    batch_size: int = 1
    transition_power: float = 1.0
    split: bool = True
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.overlap < 1:
            raise BadArgumentError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.segment is not None and not self.segment > 0:
            raise BadArgumentError(f"--segment must be positive, got {self.segment}")
        if not self.batch_size >= 1 or not self.shifts >= 0:
            raise BadArgumentError("--batch-size must be >= 1 and --shifts >= 0")
        if not self.transition_power >= 1:
            raise BadArgumentError(f"transition_power must be >= 1, got {self.transition_power}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise BadArgumentError(f"--seed must be a whole number >= 0, got {self.seed!r}")
        object.__setattr__(self, "batch_size", int(self.batch_size))

    # ---------------------------------------------------------------- geometry for one network
    def samples(self, net: nn.Module) -> int | None:
        """Chunk length in samples for ``net`` (a single network, not a bag), or None for "the whole
        input in one call" (``split=False``, or no ``segment`` here nor on the network)."""
        if not self.split:
            return None
        segment = self.segment if self.segment is not None else segment_of(net)
        if segment is None:
            return None
        return max(1, int(net.samplerate * segment))

    def stride(self, net: nn.Module) -> int | None:
        """Samples between the starts of consecutive chunks (None: whole inputs)."""
        length = self.samples(net)
        return None if length is None else _stride(length, self.overlap)

    def input_length(self, net: nn.Module, length: int) -> int:
        """Samples ``net`` is given for a chunk of ``length``: the chunk plus its context.

        Networks that pad every input to their training length themselves (HTDemucs,
        ``use_train_segment``) get exactly one segment of real context when chunking, as demucs
        gives them; others get their ``valid_length`` (if any).
        """
        segment_length = self.samples(net)
        if segment_length is not None and uses_train_segment(net):
            return max(segment_length, length)
        return input_length(net, length)

    def context(self, net: nn.Module, length: int) -> tuple[int, int]:
        """``(before, after)``: the samples of context ``net`` is given before and after a chunk of
        ``length`` (:meth:`input_length` less the chunk, centred as :func:`apply_model` cuts it)."""
        extra = self.input_length(net, length) - length
        return extra // 2, extra - extra // 2

    def history(self, net: nn.Module) -> int | None:
        """Input samples before a chunk's start that it, or any later and shorter chunk, may read
        (the streaming engine keeps this much, and :meth:`window_plan` as each window's margin; None
        without a segment): a segment plus a full chunk's context."""
        length = self.samples(net)
        return None if length is None else length + sum(self.context(net, length)) + 1

    def plan(self, net: nn.Module, lengths: Sequence[int]) -> list[_Chunk]:
        """The chunks of inputs of ``lengths`` samples: every stride from 0, the last ones cut at
        the end (as in demucs, chunks start every stride up to the end even when one chunk would
        cover the input); one whole chunk per input when :meth:`samples` is None."""
        segment_length = self.samples(net)
        chunks = []
        for item, length in enumerate(lengths):
            if segment_length is None:
                chunks.append(_Chunk(item, 0, length))
                continue
            stride = _stride(segment_length, self.overlap)
            chunks += [_Chunk(item, offset, min(segment_length, length - offset))
                       for offset in range(0, length, stride)]
        return chunks

    def chunk_count(self, net: nn.Module, frames: int) -> int:
        """About how many chunks an input of ``frames`` samples makes (exact for a single network;
        for a bag, by the bag's own segment): used to fill batches with short files."""
        stride = self.stride(net)
        return 1 if stride is None else -(-frames // stride)

    def window_plan(self, net: nn.Module, window: float) -> WindowPlan | None:
        """How to separate a long input ``window`` seconds (emitted) at a time, or None when it
        cannot be (a network without a segment runs on whole inputs; very different bag strides)."""
        strides, margin = [], 0
        split = Chunking(segment=self.segment, overlap=self.overlap)  # windows need chunks
        for member, _ in member_scales(net, torch.ones(len(net.sources), dtype=torch.float64)):
            if split.samples(member) is None:
                return None
            margin = max(margin, split.history(member))
            strides.append(split.stride(member))
        align = math.lcm(*strides)
        emitted = max(1, int(window * net.samplerate))
        if align > 4 * emitted:
            return None
        return WindowPlan(align=align, margin=margin, length=emitted + 2 * margin + align)

    def shift_offsets(self, net: nn.Module, rng: random.Random) -> tuple[int, list[int]]:
        """``(max_shift, offsets)``: the largest shift in samples and the ``shifts`` offsets drawn
        from ``rng`` (as demucs draws them, ``randint(0, max_shift)``, but from the separation's
        own seeded generator, never the global one)."""
        max_shift = int(SHIFT_SECONDS * net.samplerate)
        return max_shift, [rng.randint(0, max_shift) for _ in range(self.shifts)]


def _stride(segment_length: int, overlap: float) -> int:
    return max(1, int((1 - overlap) * segment_length))


def _chunking(chunking: Chunking | None, options: dict) -> Chunking:
    """``chunking``, or one built from keyword ``options`` (not both)."""
    if chunking is None:
        return Chunking(**options)
    if options:
        raise TypeError(f"pass either a Chunking or its options, not both ({', '.join(sorted(options))})")
    return chunking


def apply_model(net: nn.Module, mix: torch.Tensor, chunking: Chunking | None = None, *, progress: bool = False,
                **options) -> torch.Tensor:
    """Separate ``mix (B, C, T)`` into ``(B, S, C, T)`` with ``net`` (on its own device).

    ``chunking``: a :class:`Chunking`, or its fields as keywords (``segment``, ``overlap``,
    ``shifts``, ``batch_size``, ``transition_power``, ``split``, ``seed``). With ``shifts``, the
    offsets are drawn from ``random.Random(seed)`` made for this call, so the result is a function
    of the inputs and options, and every item of the batch gets the same offsets. The output is on
    ``mix.device``. A :class:`~stemsep.inference.bag.BagOfModels` is applied model by model, each
    with its own segment and shifts, and the results mixed with the bag's per-source weights.
    """
    chunking = _chunking(chunking, options)
    if mix.dim() != 3:
        raise ValueError(f"mix must be (batch, channels, time), got shape {tuple(mix.shape)}")
    out = torch.zeros(mix.shape[0], len(net.sources), *mix.shape[1:], device=mix.device, dtype=mix.dtype)
    with torch.no_grad():
        _accumulate_model(net, list(mix.unbind(0)), list(out.unbind(0)),
                          torch.ones(len(net.sources), dtype=torch.float64), chunking,
                          random.Random(chunking.seed), progress)
    return out


def apply_model_many(net: nn.Module, mixes: Sequence[torch.Tensor], chunking: Chunking | None = None, *,
                     progress: bool = False, **options) -> list[torch.Tensor]:
    """:func:`apply_model` for mixes of different lengths, ``(C, T_i)`` -> ``(S, C, T_i)`` each.

    Chunks of all the mixes share network calls (``batch_size`` at a time): many short
    files keep a GPU as busy as one long one. Results equal separate calls (same ``shifts`` and
    ``seed``: every mix gets the offsets ``random.Random(seed)`` draws, whatever the other mixes).
    """
    chunking = _chunking(chunking, options)
    if any(m.dim() != 2 for m in mixes):
        raise ValueError("each mix must be (channels, time)")
    outs = [torch.zeros(len(net.sources), *m.shape, device=m.device, dtype=m.dtype) for m in mixes]
    with torch.no_grad():
        _accumulate_model(net, list(mixes), outs, torch.ones(len(net.sources), dtype=torch.float64), chunking,
                          random.Random(chunking.seed), progress)
    return outs


def member_scales(net: nn.Module, scale: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """The single networks of ``net`` (a bag's members, recursively, in order) with their per-source
    scales: ``scale`` times each member's weight over the members' total, per source."""
    members = bag_members(net)
    if members is None:
        return [(net, scale)]
    weights = torch.as_tensor([row for _, row in members], dtype=torch.float64)
    totals = weights.sum(0)
    return [pair for (model, _), row in zip(members, weights, strict=True)
            for pair in member_scales(model, scale * row / totals)]


def _accumulate_model(net: nn.Module, mix: list[torch.Tensor], out: list[torch.Tensor], scale: torch.Tensor,
                      chunking: Chunking, rng: random.Random, progress: bool) -> None:
    """Add ``scale[source] *`` the separation of each mix by ``net`` into its ``out`` (no per-model or
    per-shift copies): a bag member by member, each with its own segment and shifts, drawing its shift
    offsets from ``rng`` in turn."""
    for model, model_scale in member_scales(net, scale):
        if chunking.shifts <= 0:
            _accumulate_chunks(model, mix, out, 0, model_scale, chunking, progress)
            continue
        max_shift, offsets = chunking.shift_offsets(model, rng)
        for offset in offsets:
            # Shifting the input right by `lead` zeros = a chunk grid starting `lead` samples early.
            _accumulate_chunks(model, mix, out, max_shift - offset, model_scale / chunking.shifts, chunking,
                               progress)


def transition_weight(segment_length: int, power: float = 1.0, device=None) -> torch.Tensor:
    """Triangular cross-fade window, peak 1 in the middle, raised to ``power`` (sharper fades)."""
    half = segment_length // 2
    ramp_up = torch.arange(1, half + 1, device=device)
    ramp_down = torch.arange(segment_length - half, 0, -1, device=device)
    weight = torch.cat([ramp_up, ramp_down]).float()
    return (weight / weight.max()) ** power


def _chunk_input(mix: torch.Tensor, chunk: _Chunk, input_length: int, lead: int) -> torch.Tensor:
    """``mix`` is the chunk's own item ``(channels, time)``."""
    # Samples around the chunk, centred, real neighbours where they exist, zeros past the ends.
    # Chunk offsets are on the shifted time line: mix sample ``i`` sits at ``i + lead``.
    total = mix.shape[-1]
    start = chunk.offset - (input_length - chunk.length) // 2 - lead
    end = start + input_length
    if end <= 0 or start >= total:  # wholly in the shift's leading zeros (segments shorter than a shift)
        return mix.new_zeros(mix.shape[0], input_length)
    lo, hi = max(0, start), min(total, end)
    return nn.functional.pad(mix[:, lo:hi], (lo - start, end - hi))


def _batches(net: nn.Module, chunks: list[_Chunk], chunking: Chunking) -> Iterator[tuple[int, list[_Chunk]]]:
    """Group chunks needing the same network input length, ``batch_size`` at a time, in order."""
    pending: dict[int, list[_Chunk]] = {}
    for chunk in chunks:
        size = chunking.input_length(net, chunk.length)
        group = pending.setdefault(size, [])
        group.append(chunk)
        if len(group) == chunking.batch_size:
            yield size, pending.pop(size)
    for size, group in pending.items():
        yield size, group


def _accumulate_chunks(net: nn.Module, mixes: list[torch.Tensor], outs: list[torch.Tensor], lead: int,
                       scale: torch.Tensor, chunking: Chunking, progress: bool) -> None:
    """Overlap-add ``scale *`` the chunked separation of each mix (delayed by ``lead``) into its out."""
    segment_length = chunking.samples(net)
    single = segment_length is None  # one chunk per item: nothing to blend
    virtual = [m.shape[-1] + lead for m in mixes]
    chunks = chunking.plan(net, virtual)
    device = _net_device(net, mixes[0].device)
    out_device, out_dtype = outs[0].device, outs[0].dtype
    scale = scale.to(device=out_device, dtype=out_dtype)[:, None, None]
    weight_sums: dict[int, torch.Tensor] = {}
    if not single:
        weight = transition_weight(segment_length, chunking.transition_power, device=out_device).to(out_dtype)
        for length in set(virtual):  # the cross-fade normaliser of each distinct length's grid
            total = torch.zeros(length, device=out_device, dtype=out_dtype)
            for chunk in chunking.plan(net, [length]):
                total[chunk.offset:chunk.offset + chunk.length] += weight[:chunk.length]
            weight_sums[length] = total
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chunks), unit="chunk", leave=False)
    for size, group in _batches(net, chunks, chunking):
        inputs = torch.stack([_chunk_input(mixes[c.item], c, size, lead) for c in group]).to(device)
        outputs = net(inputs)
        del inputs
        for chunk, result in zip(group, outputs, strict=True):
            trim = (result.shape[-1] - chunk.length) // 2
            first = max(chunk.offset, lead)  # skip what falls before the mix (the shift's zeros)
            stop = chunk.offset + chunk.length
            if first >= stop:
                continue
            result = result[..., trim + first - chunk.offset:trim + stop - chunk.offset].to(out_device, out_dtype)
            target = outs[chunk.item][..., first - lead:stop - lead]
            if single:
                target += scale * result
            else:
                blend = weight[first - chunk.offset:stop - chunk.offset]
                blend = blend / weight_sums[virtual[chunk.item]][first:stop]
                target += (scale * blend) * result
        del outputs
        if bar is not None:
            bar.update(len(group))
    if bar is not None:
        bar.close()


def _net_device(net: nn.Module, default: torch.device) -> torch.device:
    for tensor in net.parameters():
        return tensor.device
    for tensor in net.buffers():
        return tensor.device
    return default
