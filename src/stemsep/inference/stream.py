"""Streaming separation: blocks of any size in, as many stem samples out, a fixed latency later.

:class:`StreamingSeparator` runs any separation network on a live stream with the windowed
geometry of :func:`~stemsep.inference.chunked.apply_model`: the same chunks (every stride from
sample 0), the same context, the same triangular cross-fades. A chunk goes through the network
once, as soon as the input it reads has arrived; a stem sample is final once every chunk covering
it has been computed. Every :meth:`~StreamingSeparator.push` returns exactly as many samples as
it was given, delayed by :attr:`~StreamingSeparator.latency`: output sample ``n`` is the stem of
input sample ``n - latency`` (zeros for ``n < latency``), and :meth:`~StreamingSeparator.flush`
returns the last ``latency`` samples. So the concatenated outputs, less their first ``latency``
samples, equal ``apply_model(net, whole_input[None], chunking)[0]``.

A network that declares the causal, stateful contract (``stream_step`` / ``stream_hop`` /
``stream_latency``, read by :func:`~stemsep.contract.stream_step_of`; HS-TasNet) is streamed frame
by frame instead, unless a windowed geometry is asked for: blocks are buffered to whole hops, each
hop goes through ``stream_step`` once with the state carried, and the concatenated outputs less
their first ``latency`` samples equal the offline ``net(whole_input[None])[0]``; ``latency`` is the
network's ``stream_latency`` plus ``stream_hop - 1`` (a sample waits for its hop to be complete).

Per network the work is done by an engine (``_WindowedEngine``, ``_CausalEngine``) with
``latency``, ``push``, ``flush``, ``reset``, chosen in :func:`_engine`.
"""

from __future__ import annotations

import torch
from torch import nn

from stemsep.contract import StreamStep, stream_step_of
from stemsep.errors import BadArgumentError
from stemsep.inference.chunked import (
    Chunking,
    _batches,
    _Chunk,
    _chunk_input,
    _chunking,
    _net_device,
    member_scales,
    transition_weight,
)


class _Fifo:
    """Samples along the last axis, appended at the end and taken from the front, in time
    proportional to the samples moved (amortised: a buffer that doubles when full and is compacted)."""

    def __init__(self, lead: tuple[int, ...], like: torch.Tensor):
        self.data = like.new_zeros(*lead, 0)
        self.start = self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def view(self) -> torch.Tensor:
        return self.data[..., self.start:self.end]

    def _reserve(self, count: int) -> None:
        if self.end + count <= self.data.shape[-1]:
            return
        live = len(self)
        grown = self.data.new_zeros(*self.data.shape[:-1], max(2 * (live + count), 1024))
        grown[..., :live] = self.view()
        self.data, self.start, self.end = grown, 0, live

    def append(self, samples: torch.Tensor) -> None:
        self._reserve(samples.shape[-1])
        self.data[..., self.end:self.end + samples.shape[-1]] = samples
        self.end += samples.shape[-1]

    def extend_zeros(self, count: int) -> None:
        if count > 0:
            self._reserve(count)
            self.data[..., self.end:self.end + count] = 0
            self.end += count

    def take(self, count: int) -> torch.Tensor:
        """The first ``count`` samples (a copy), removed."""
        taken = self.data[..., self.start:self.start + count].clone()
        self.start += count
        return taken

    def drop(self, count: int) -> None:
        self.start += count


class _WindowedEngine:
    """One network (not a bag) streamed chunk by chunk on :func:`apply_model`'s grid.

    Holds the input from :meth:`Chunking.history` samples before the next chunk's start, and the
    overlap-add sums (weighted stems and weights) of the samples not final yet. ``push`` returns
    the samples that became final, scaled per source by ``scale`` (a bag member's weight)."""

    def __init__(self, net: nn.Module, chunking: Chunking, scale: torch.Tensor):
        self.net, self.chunking, self.member_scale = net, chunking, scale
        self.samples, self.stride = chunking.samples(net), chunking.stride(net)
        self.after = chunking.context(net, self.samples)[1]
        self.keep = chunking.history(net)
        self.window = chunking.input_length(net, self.samples)
        self.weight = transition_weight(self.samples, chunking.transition_power)
        self.reset()

    @property
    def latency(self) -> int:
        """The most input samples pushed past the last final sample: a chunk and the context after it
        arrive before the chunk is computed, and the first sample of a chunk waits for the whole wait."""
        return self.samples + self.after - 1

    def reset(self) -> None:
        self.mix = self.sums = self.weights = None
        self.base = 0  # absolute index of the first held input sample
        self.pushed = 0
        self.next = 0  # index of the next chunk on the grid
        self.final = 0  # absolute index of the first sample not returned yet (= start of the sums)

    def _start(self, block: torch.Tensor) -> None:
        if self.mix is None:
            self.mix = _Fifo((block.shape[0],), block)
            self.sums = _Fifo((len(self.net.sources), block.shape[0]), block)
            self.weights = _Fifo((), block)
            self.weight = self.weight.to(block.device, block.dtype)
            self.scale = self.member_scale.to(block.device, block.dtype)[:, None, None]

    def _run(self, chunks: list[_Chunk], size: int) -> None:
        """Compute ``chunks`` (offsets absolute) of network input ``size`` and add them to the sums."""
        held = self.mix.view()
        for chunk in chunks:
            if self.base and chunk.offset - (size - chunk.length) // 2 < self.base:  # pragma: no cover
                raise RuntimeError("streaming: a chunk reads input no longer held (Chunking.history too short)")
        device = _net_device(self.net, held.device)
        inputs = torch.stack([_chunk_input(held, _Chunk(0, c.offset - self.base, c.length), size, 0)
                              for c in chunks]).to(device)
        outputs = self.net(inputs)
        for chunk, result in zip(chunks, outputs, strict=True):
            trim = (result.shape[-1] - chunk.length) // 2
            result = result[..., trim:trim + chunk.length].to(held.device, held.dtype)
            end = chunk.offset + chunk.length - self.final
            self.sums.extend_zeros(end - len(self.sums))
            self.weights.extend_zeros(end - len(self.weights))
            weight = self.weight[:chunk.length]
            self.sums.view()[..., chunk.offset - self.final:end] += weight * result
            self.weights.view()[chunk.offset - self.final:end] += weight

    def _emit(self, upto: int) -> torch.Tensor:
        count = upto - self.final
        out = self.scale * (self.sums.take(count) / self.weights.take(count))
        self.final = upto
        return out

    def push(self, block: torch.Tensor) -> torch.Tensor:
        self._start(block)
        self.mix.append(block)
        self.pushed += block.shape[-1]
        ready = []
        while self.next * self.stride + self.samples + self.after <= self.pushed:
            ready.append(_Chunk(0, self.next * self.stride, self.samples))
            self.next += 1
        for start in range(0, len(ready), self.chunking.batch_size):
            self._run(ready[start:start + self.chunking.batch_size], self.window)
        out = self._emit(self.next * self.stride)
        base = max(self.base, self.final - self.keep)
        self.mix.drop(base - self.base)
        self.base = base
        return out

    def flush(self) -> torch.Tensor:
        """The rest, the input having ended: the grid's last chunks, cut at the end as offline."""
        total = self.pushed
        tail = [_Chunk(0, offset, min(self.samples, total - offset))
                for offset in range(self.next * self.stride, total, self.stride)]
        for size, group in _batches(self.net, tail, self.chunking):
            self._run(group, size)
        out = self._emit(total)
        self.reset()
        return out


class _CausalEngine:
    """One causal, stateful network streamed step by step with its :class:`~stemsep.contract.StreamStep`.

    Holds the input samples short of a whole hop, the network's state, and how many leading output
    samples (the stems of silence before the start, ``stream_latency`` of them) are still to drop.
    ``push`` returns the stems of the input samples that became final, from input sample 0 on, scaled
    per source by ``scale``; each hop goes through the network once."""

    def __init__(self, net: nn.Module, contract: StreamStep, scale: torch.Tensor):
        self.net, self.contract, self.member_scale = net, contract, scale
        self.reset()

    @property
    def latency(self) -> int:
        """The network's delay plus a hop less one sample: after ``k`` whole hops the stems of the first
        ``k * hop - stream_latency`` input samples are final, and a hop's first sample waits for its last."""
        return self.contract.latency + self.contract.hop - 1

    def reset(self) -> None:
        self.pending: torch.Tensor | None = None  # input samples short of a hop
        self.state = None
        self.skip = self.contract.latency  # leading output samples still to drop
        self.pushed = self.produced = 0  # input samples taken, stem samples returned

    def _steps(self, hops: torch.Tensor) -> torch.Tensor:
        """``hops (C, k * hop)`` through the network, hop by hop -> the stems of the final samples."""
        hop = self.contract.hop
        device = _net_device(self.net, hops.device)
        outs = []
        for start in range(0, hops.shape[-1], hop):
            chunk = hops[..., start:start + hop]
            out, self.state = self.contract.step(chunk[None].to(device), self.state)
            outs.append(out[0])
        out = torch.cat(outs, -1).to(hops.device, hops.dtype) if outs else \
            hops.new_zeros(len(self.net.sources), hops.shape[0], 0)
        drop = min(self.skip, out.shape[-1])
        self.skip -= drop
        out = self.scale * out[..., drop:]
        self.produced += out.shape[-1]
        return out

    def push(self, block: torch.Tensor) -> torch.Tensor:
        if self.pending is None:
            self.pending = block[..., :0]
            self.scale = self.member_scale.to(block.device, block.dtype)[:, None, None]
        self.pushed += block.shape[-1]
        held = torch.cat((self.pending, block), -1)
        whole = held.shape[-1] - held.shape[-1] % self.contract.hop
        self.pending = held[..., whole:]
        return self._steps(held[..., :whole])

    def flush(self) -> torch.Tensor:
        """The rest, the input having ended: zeros after it until the stems of every input sample are out."""
        hop, pending = self.contract.hop, self.pending.shape[-1]
        remaining = self.pushed - self.produced  # = pending + latency - skip
        steps = -(-(pending + self.contract.latency) // hop)  # enough network output for them and the skip
        zeros = self.pending.new_zeros(self.pending.shape[0], steps * hop - pending)
        out = self._steps(torch.cat((self.pending, zeros), -1))[..., :remaining]
        self.reset()
        return out


def _engine(net: nn.Module, chunking: Chunking, scale: torch.Tensor, causal: bool = False):
    """The engine for one network: step by step when ``causal`` and the network declares the causal,
    stateful contract, else windowed on ``chunking``'s grid."""
    contract = stream_step_of(net) if causal else None
    if contract is not None:
        return _CausalEngine(net, contract, scale)
    if chunking.samples(net) is None:
        raise BadArgumentError(f"streaming needs a segment: {type(net).__name__} has none and no --segment "
                               "was given (or split=False); pass segment=<seconds>")
    return _WindowedEngine(net, chunking, scale)


class StreamingSeparator:
    """Separate a stream block by block: ``push(block (C, n)) -> (S, C, n)``, then ``flush()``.

    ``chunking``: a :class:`~stemsep.inference.chunked.Chunking`, or its fields as keywords
    (``segment``, ``overlap``, ``batch_size``, ``transition_power``); ``shifts`` must be 0 and the
    network (every member of a bag) needs a segment, its own or ``segment``. ``causal``: None (the
    default) streams step by step every network (bag member) that declares the causal, stateful
    contract (:func:`~stemsep.contract.stream_step_of`), unless a chunking or its options are given,
    which ask for windowed geometry; True requires that contract of every member (and no chunking);
    False is always windowed. Step by step, the outputs less the first ``latency`` samples equal the
    offline ``net(whole_input[None])[0]``, with ``latency = stream_latency + stream_hop - 1``.

    Blocks may have any size, from one sample to minutes, changing from call to call; each ``push``
    returns as many samples as it was given. :attr:`latency` (samples, exact): output sample ``n`` is the stem of
    input sample ``n - latency``, zeros before. :meth:`flush` ends the stream and returns its last
    ``latency`` samples (stems of the last input samples; so the outputs, less the first
    ``latency`` samples, are the offline ``apply_model`` result with the same chunking), and leaves
    the separator fresh, as :meth:`reset` does. Stems are on the blocks' device and dtype.

    Memory and work per push follow the block: the input from a little more than a chunk before
    the next chunk to compute, the overlap-add sums of samples not final yet, and the final
    samples still inside the latency; each chunk goes through the network once.
    """

    def __init__(self, net: nn.Module, chunking: Chunking | None = None, *, causal: bool | None = None,
                 **options):
        windowed = chunking is not None or bool(options)
        if causal and windowed:
            raise BadArgumentError("causal=True streams step by step: pass no chunking (segment, overlap, ...) "
                                   "with it")
        chunking = _chunking(chunking, options)
        if chunking.shifts:
            raise BadArgumentError(f"--shifts must be 0 when streaming (random time shifts need the whole "
                                   f"input), got {chunking.shifts}")
        self.net, self.chunking = net, chunking
        self.sources = list(net.sources)
        members = member_scales(net, torch.ones(len(self.sources), dtype=torch.float64))
        if causal:
            lacking = [type(member).__name__ for member, _ in members if stream_step_of(member) is None]
            if lacking:
                raise BadArgumentError(f"causal=True: {', '.join(lacking)} declares no stream_step / stream_hop / "
                                       "stream_latency (see docs/bring-your-own-model.md)")
        step_by_step = causal if causal is not None else not windowed
        self.engines = [_engine(member, chunking, scale, causal=step_by_step) for member, scale in members]
        self.latency = max(engine.latency for engine in self.engines)
        self.reset()

    def reset(self) -> None:
        """Start a new stream, exactly as a fresh separator."""
        for engine in self.engines:
            engine.reset()
        self.final: list[_Fifo] | None = None  # per engine: final samples not returned yet
        self.channels: int | None = None
        self.emitted = 0  # output samples returned (including the leading zeros)

    def _check(self, block: torch.Tensor) -> torch.Tensor:
        block = torch.as_tensor(block)
        if block.dim() != 2:
            raise BadArgumentError(f"a block must be (channels, samples), got shape {tuple(block.shape)}")
        if self.channels is None:
            self.channels = block.shape[0]
            self.final = [_Fifo((len(self.sources), block.shape[0]), block) for _ in self.engines]
        elif block.shape[0] != self.channels:
            raise BadArgumentError(f"a block must have the stream's {self.channels} channels, got {block.shape[0]}")
        return block

    def _out(self, count: int, like: torch.Tensor) -> torch.Tensor:
        """The next ``count`` output samples: leading zeros, then final stems (summed over engines)."""
        zeros = max(0, min(count, self.latency - self.emitted))
        out = like.new_zeros(len(self.sources), self.channels, count)
        stems = count - zeros
        if stems:
            out[..., zeros:] = sum(fifo.take(stems) for fifo in self.final)
        self.emitted += count
        return out

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Separate ``block (channels, n)``; returns ``(sources, channels, n)``, ``latency`` samples late."""
        block = self._check(block)
        with torch.no_grad():
            for engine, fifo in zip(self.engines, self.final, strict=True):
                fifo.append(engine.push(block))
        return self._out(block.shape[-1], block)

    def flush(self) -> torch.Tensor:
        """End the stream: its last ``latency`` output samples ``(sources, channels, latency)``; then reset."""
        if self.channels is None:  # nothing pushed
            out = torch.zeros(len(self.sources), getattr(self.net, "audio_channels", 2), self.latency)
        else:
            like = self.final[0].data
            with torch.no_grad():
                for engine, fifo in zip(self.engines, self.final, strict=True):
                    fifo.append(engine.flush())
            out = self._out(self.latency, like)
        self.reset()
        return out
