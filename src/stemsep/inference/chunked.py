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


def apply_model(net: nn.Module, mix: torch.Tensor, *, segment: float | Fraction | None = None,
                overlap: float = 0.25, shifts: int = 0, split: bool = True, batch_size: int = 1,
                transition_power: float = 1.0, progress: bool = False, seed: int = 0) -> torch.Tensor:
    """Separate ``mix (B, C, T)`` into ``(B, S, C, T)`` with ``net`` (on its own device).

    ``segment``: chunk length in seconds (default ``net.segment``, else the whole input).
    ``shifts``: number of random time shifts (up to 0.5 s) whose results are averaged; the offsets
    are drawn from ``random.Random(seed)`` made for this call (never the global RNG), so the result
    is a function of the inputs and options, and every item of the batch gets the same offsets.
    ``split=False`` runs each whole input at once. The output is on ``mix.device``.
    A :class:`~stemsep.inference.bag.BagOfModels` is applied model by model, each with its own
    segment and shifts, and the results mixed with the bag's per-source weights.
    """
    if mix.dim() != 3:
        raise ValueError(f"mix must be (batch, channels, time), got shape {tuple(mix.shape)}")
    out = torch.zeros(mix.shape[0], len(net.sources), *mix.shape[1:], device=mix.device, dtype=mix.dtype)
    options = _options(segment, overlap, shifts, split, batch_size, transition_power, progress, seed)
    with torch.no_grad():
        _accumulate_model(net, list(mix.unbind(0)), list(out.unbind(0)),
                          torch.ones(len(net.sources), dtype=torch.float64), options)
    return out


def apply_model_many(net: nn.Module, mixes: Sequence[torch.Tensor], *, segment: float | Fraction | None = None,
                     overlap: float = 0.25, shifts: int = 0, split: bool = True, batch_size: int = 1,
                     transition_power: float = 1.0, progress: bool = False,
                     seed: int = 0) -> list[torch.Tensor]:
    """:func:`apply_model` for mixes of different lengths, ``(C, T_i)`` -> ``(S, C, T_i)`` each.

    Chunks of all the mixes share network calls (``batch_size`` at a time): many short
    files keep a GPU as busy as one long one. Results equal separate calls (same ``shifts`` and
    ``seed``: every mix gets the offsets ``random.Random(seed)`` draws, whatever the other mixes).
    """
    if any(m.dim() != 2 for m in mixes):
        raise ValueError("each mix must be (channels, time)")
    outs = [torch.zeros(len(net.sources), *m.shape, device=m.device, dtype=m.dtype) for m in mixes]
    options = _options(segment, overlap, shifts, split, batch_size, transition_power, progress, seed)
    with torch.no_grad():
        _accumulate_model(net, list(mixes), outs, torch.ones(len(net.sources), dtype=torch.float64), options)
    return outs


def check_options(*, segment: float | Fraction | None = None, overlap: float = 0.25, shifts: int = 0,
                  batch_size: int = 1, transition_power: float = 1.0, seed: int = 0) -> None:
    """Raise :class:`~stemsep.errors.BadArgumentError` (a ``ValueError``) for an out-of-range option.

    The one check of these options: :func:`apply_model` and :func:`apply_model_many` run it, and
    callers that do work before separating (``stemsep separate``) run it first.
    """
    if not 0 <= overlap < 1:
        raise BadArgumentError(f"--overlap must be in [0, 1), got {overlap}")
    if segment is not None and not segment > 0:
        raise BadArgumentError(f"--segment must be positive, got {segment}")
    if not batch_size >= 1 or not shifts >= 0:
        raise BadArgumentError("--batch-size must be >= 1 and --shifts >= 0")
    if not transition_power >= 1:
        raise BadArgumentError(f"transition_power must be >= 1, got {transition_power}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise BadArgumentError(f"--seed must be a whole number >= 0, got {seed!r}")


def _options(segment, overlap, shifts, split, batch_size, transition_power, progress, seed) -> dict:
    check_options(segment=segment, overlap=overlap, shifts=shifts, batch_size=batch_size,
                  transition_power=transition_power, seed=seed)
    # One generator per call: bag members draw their offsets from it in turn.
    return dict(segment=segment, overlap=overlap, shifts=shifts, split=split, batch_size=int(batch_size),
                transition_power=transition_power, progress=progress, rng=random.Random(int(seed)))


def _accumulate_model(net: nn.Module, mix: list[torch.Tensor], out: list[torch.Tensor], scale: torch.Tensor,
                      options: dict) -> None:
    """Add ``scale[source] *`` the separation of each mix by ``net`` into its ``out``
    (no per-model or per-shift copies)."""
    members = bag_members(net)
    if members is not None:
        # Weighted per-source average of the members, each with its own segment and shifts.
        weights = torch.as_tensor([row for _, row in members], dtype=torch.float64)
        totals = weights.sum(0)
        for (model, _), model_weights in zip(members, weights, strict=True):
            _accumulate_model(model, mix, out, scale * model_weights / totals, options)
        return
    chunking = {k: options[k] for k in ("segment", "overlap", "split", "batch_size", "transition_power",
                                        "progress")}
    shifts = options["shifts"]
    if shifts <= 0:
        _accumulate_chunks(net, mix, out, 0, scale, **chunking)
        return
    max_shift = int(SHIFT_SECONDS * net.samplerate)
    # randint as demucs draws them, but from the call's own seeded generator (not the global one:
    # the same inputs and options give the same stems, whatever ran before or consumes `random`).
    rng = options["rng"]
    offsets = [rng.randint(0, max_shift) for _ in range(shifts)]
    for offset in offsets:
        # Shifting the input right by `lead` zeros = a chunk grid starting `lead` samples early.
        _accumulate_chunks(net, mix, out, max_shift - offset, scale / shifts, **chunking)


def _segment_samples(net: nn.Module, segment: float | Fraction | None, split: bool) -> int | None:
    """Chunk length in samples, or None for "the whole input in one go"."""
    if not split:
        return None
    if segment is None:
        segment = segment_of(net)
    if segment is None:
        return None
    return max(1, int(net.samplerate * segment))  # segment > 0: checked by check_options


def transition_weight(segment_length: int, power: float = 1.0, device=None) -> torch.Tensor:
    """Triangular cross-fade window, peak 1 in the middle, raised to ``power`` (sharper fades)."""
    half = segment_length // 2
    ramp_up = torch.arange(1, half + 1, device=device)
    ramp_down = torch.arange(segment_length - half, 0, -1, device=device)
    weight = torch.cat([ramp_up, ramp_down]).float()
    return (weight / weight.max()) ** power


def chunk_stride(segment_length: int, overlap: float) -> int:
    """Samples between the starts of consecutive chunks of ``segment_length`` samples."""
    return max(1, int((1 - overlap) * segment_length))


def plan_chunks(batch: int, length: int, segment_length: int, overlap: float,
                whole: bool = False) -> list[_Chunk]:
    """Chunk positions: every ``stride`` samples from 0, the last ones cut at the end.

    As in demucs, chunks start every stride up to the end even when one chunk would cover
    the input (results are compatible); ``whole`` asks for exactly one chunk per item.
    """
    stride = length if whole else chunk_stride(segment_length, overlap)
    return [_Chunk(item, offset, min(segment_length, length - offset))
            for item in range(batch) for offset in range(0, length, stride)]


def _plan(lengths: list[int], segment_length: int | None, overlap: float) -> list[_Chunk]:
    """Chunks of every item (its own length); ``segment_length=None``: one whole chunk each."""
    chunks = []
    for item, length in enumerate(lengths):
        for chunk in plan_chunks(1, length, segment_length or length, overlap, whole=segment_length is None):
            chunks.append(_Chunk(item, chunk.offset, chunk.length))
    return chunks


def _input_length(net: nn.Module, length: int, segment_length: int | None) -> int:
    """Samples the network is given for a chunk of ``length`` (the chunk plus context).

    Networks that pad every input to their training length themselves (HTDemucs,
    ``use_train_segment``) get exactly one segment of real context when chunking, as demucs
    gives them; others get their ``valid_length`` (if any).
    """
    if segment_length is not None and uses_train_segment(net):
        return max(segment_length, length)
    return input_length(net, length)


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


def _batches(net: nn.Module, chunks: list[_Chunk], batch_size: int,
             segment_length: int | None) -> Iterator[tuple[int, list[_Chunk]]]:
    """Group chunks needing the same network input length, ``batch_size`` at a time, in order."""
    pending: dict[int, list[_Chunk]] = {}
    for chunk in chunks:
        size = _input_length(net, chunk.length, segment_length)
        group = pending.setdefault(size, [])
        group.append(chunk)
        if len(group) == batch_size:
            yield size, pending.pop(size)
    for size, group in pending.items():
        yield size, group


def _accumulate_chunks(net: nn.Module, mixes: list[torch.Tensor], outs: list[torch.Tensor], lead: int,
                       scale: torch.Tensor, segment, overlap: float, split: bool, batch_size: int,
                       transition_power: float, progress: bool) -> None:
    """Overlap-add ``scale *`` the chunked separation of each mix (delayed by ``lead``) into its out."""
    segment_length = _segment_samples(net, segment, split)
    single = segment_length is None  # one chunk per item: nothing to blend
    virtual = [m.shape[-1] + lead for m in mixes]
    chunks = _plan(virtual, segment_length, overlap)
    device = _net_device(net, mixes[0].device)
    out_device, out_dtype = outs[0].device, outs[0].dtype
    scale = scale.to(device=out_device, dtype=out_dtype)[:, None, None]
    weight_sums: dict[int, torch.Tensor] = {}
    if not single:
        weight = transition_weight(segment_length, transition_power, device=out_device).to(out_dtype)
        for length in set(virtual):  # the cross-fade normaliser of each distinct length's grid
            total = torch.zeros(length, device=out_device, dtype=out_dtype)
            for chunk in plan_chunks(1, length, segment_length, overlap):
                total[chunk.offset:chunk.offset + chunk.length] += weight[:chunk.length]
            weight_sums[length] = total
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(chunks), unit="chunk", leave=False)
    for size, group in _batches(net, chunks, batch_size, segment_length):
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
