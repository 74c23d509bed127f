"""Live streaming on one CPU thread (issue 25): latency, per-block compute and real-time factor of
``StreamingSeparator``.

    OMP_NUM_THREADS=1 python benchmarks/bench_stream.py --out stream.md
    OMP_NUM_THREADS=1 python benchmarks/bench_stream.py --quick          # a short run, same table

Networks (random weights: the time does not depend on their values), each loaded the way
``stemsep`` loads a checkpoint on CPU (``load_separator`` then ``optimize_for_cpu``):

* HS-TasNet at the paper size (``HSTasNet()``, 50.2 M parameters) and ``small=True`` (28.1 M), at its
  native 1024 / 512 framing, float32 and int8 (``stemsep quantize``: Linear, LSTM and GRU layers,
  activations per frame), streamed causally, one ``stream_step`` per 512-sample hop;
* HT Demucs small (configs/model/htdemucs_small.yaml), streamed with windowed geometry: 1 s chunks,
  overlap 0.25 (a chunk every 0.75 s, computed once its input and context have arrived).

For each: the **algorithmic latency measured with an impulse** (the lag at which the streamed output of
an impulse matches its offline separation, asserted equal to the declared ``latency``), then the
**compute of each push** at blocks of 128, 256, 512, 1024 and 4096 samples (p50 / p99 / max in ms,
p99 as a fraction of the block's duration: at most 1 keeps up, the issue's goal is at most 0.5) and
the real-time factor (compute / audio duration). A causal network computes one step per whole
512-sample hop: at 128-sample blocks three pushes in four only buffer and the fourth runs a step, so
the p99 there is one step's time and its fraction of the 2.9 ms block is four times that of the
512-sample block; a live loop with 128-sample callbacks keeps up only if a step fits in one callback
(or runs beside the audio thread, one hop ahead). Windowed networks compute a whole chunk in the push
that completes it, one push per 0.75 s: at small blocks fewer than 1 % of the pushes compute, so p99
misses them and max is a chunk's time.

Where the reference implementation (``hs-tasnet`` 0.3.4) is installed in a side folder (``--reference``,
default /tmp/hst/site; see tests/fixtures/make_hstasnet_fixture.py for the install command), its
stateful transform (``init_stateful_transform_fn``) and our float32 separator are timed alternately,
hop by hop, on the same 512-sample hops of the same input; the table gives ours / reference (median
per hop, lower is better; ``--reference-hops`` of them).

The machine's load average is printed with the table: on a shared machine the wall-clock times follow
the load (a process waits for a core), so each push's CPU time (``time.thread_time``: the time it ran)
is given beside them; it still includes the memory bandwidth other processes take.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from stemsep.inference import StreamingSeparator, optimize_for_cpu
from stemsep.inference.chunked import Chunking, apply_model
from stemsep.io.checkpoint import load_separator, save_checkpoint
from stemsep.io.quantize import quantize_checkpoint
from stemsep.models import HSTasNet, HTDemucs

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
BLOCKS = (128, 256, 512, 1024, 4096)
HTDEMUCS_SMALL = dict(sources=["drums", "bass", "other", "vocals"], channels=16, depth=4, nfft=2048, t_layers=2,
                      dconv_comp=4, segment=2)  # configs/model/htdemucs_small.yaml
WINDOW = Chunking(segment=Fraction(1), overlap=0.25, shifts=0, batch_size=1)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load_network(cls, init_args: dict, int8: bool, folder: Path) -> torch.nn.Module:
    """``cls(**init_args)`` with random weights, through a checkpoint (quantized with ``int8``), loaded
    as ``stemsep`` loads it on CPU."""
    torch.manual_seed(0)
    net = cls(**init_args).eval()
    path = save_checkpoint(folder / "f32.ckpt", net, {"class_path": f"stemsep.models.{cls.__name__}",
                                                      "init_args": init_args})
    if int8:
        path = quantize_checkpoint(path, folder / "int8.ckpt")
    return optimize_for_cpu(load_separator(path))


def separator_for(net: torch.nn.Module) -> StreamingSeparator:
    """Causal step by step where the network declares it, else windowed on :data:`WINDOW`."""
    return StreamingSeparator(net) if isinstance(net, HSTasNet) else StreamingSeparator(net, WINDOW)


def offline(net: torch.nn.Module, mix: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(mix[None])[0] if isinstance(net, HSTasNet) else apply_model(net, mix[None], WINDOW)[0]


def measured_latency(net: torch.nn.Module, seconds: float = 1.5) -> tuple[int, int, float]:
    """Stream an impulse (512-sample blocks, then flush) and find the lag at which the output matches
    the offline separation of the same input (cross-correlation peak); returns (lag, declared latency,
    largest difference at that lag relative to the peak)."""
    length = int(seconds * SR)
    channels = net.audio_channels
    mix = torch.zeros(channels, length)
    mix[:, length // 3] = 1.0
    separator = separator_for(net)
    streamed = torch.cat([separator.push(block) for block in mix.split(512, -1)] + [separator.flush()], -1)
    expected = offline(net, mix)
    a, b = streamed.sum((0, 1)).double(), expected.sum((0, 1)).double()
    size = a.shape[-1] + b.shape[-1]
    correlation = torch.fft.irfft(torch.fft.rfft(a, size) * torch.fft.rfft(b, size).conj(), size)
    lag = int(correlation[:streamed.shape[-1] - length + 1].argmax())
    error = (streamed[..., lag:lag + length] - expected).abs().max() / expected.abs().max()
    return lag, separator.latency, float(error)


def block_times(net: torch.nn.Module, mix: torch.Tensor, block: int,
                warmup: float = 0.5) -> tuple[list[float], list[float]]:
    """Seconds of each push of ``mix`` in ``block``-sample blocks, after ``warmup`` seconds streamed and
    reset: wall-clock, and the thread's CPU time (without the time other processes held the core)."""
    separator = separator_for(net)
    for start in range(0, int(warmup * SR), block):
        separator.push(mix[:, start:start + block])
    separator.reset()
    wall, cpu = [], []
    for start in range(0, mix.shape[-1] - block + 1, block):
        begin, begin_cpu = time.perf_counter(), time.thread_time()
        separator.push(mix[:, start:start + block])
        wall.append(time.perf_counter() - begin)
        cpu.append(time.thread_time() - begin_cpu)
    return wall, cpu


def versus_reference(net: HSTasNet, site: Path, mix: torch.Tensor, hops: int) -> list[list[float]] | None:
    """Seconds per 512-sample hop of our separator and of the reference's stateful transform (the same
    size, random weights), alternating hop by hop on the same input so machine load hits both alike:
    [ours, reference] wall-clock, then [ours, reference] CPU time; None where the reference is not
    installed in ``site``."""
    if not (site / "hs_tasnet" / "hs_tasnet.py").is_file():
        return None
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_hstasnet_fixture import import_reference

    torch.manual_seed(0)
    step = import_reference(site)(small=net.small).eval().init_stateful_transform_fn(device="cpu")
    separator = separator_for(net)
    times: list[list[float]] = [[], [], [], []]
    with torch.no_grad():
        for index, chunk in enumerate(mix.split(512, -1)[:hops + 5]):
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            separator.push(chunk)
            middle, middle_cpu = time.perf_counter(), time.thread_time()
            step(chunk)
            if index >= 5:  # warm-up hops
                for into, value in zip(times, (middle - begin, time.perf_counter() - middle,
                                               middle_cpu - begin_cpu, time.thread_time() - middle_cpu)):
                    into.append(value)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the streamed (random) mix")
    parser.add_argument("--quick", action="store_true", help="3 s streams, 20 reference hops")
    parser.add_argument("--reference", type=Path, default=Path("/tmp/hst/site"),
                        help="folder where hs-tasnet 0.3.4 and einx are installed (skipped if absent)")
    parser.add_argument("--reference-hops", type=int, default=60)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    seconds, ref_hops = (3.0, 20) if args.quick else (args.seconds, args.reference_hops)
    torch.set_num_threads(1)

    mix = 0.3 * torch.randn(2, int(seconds * SR), generator=torch.Generator().manual_seed(0))
    models = [("HS-TasNet paper", HSTasNet, {}, False), ("HS-TasNet paper", HSTasNet, {}, True),
              ("HS-TasNet small", HSTasNet, {"small": True}, False), ("HS-TasNet small", HSTasNet, {"small": True}, True),
              ("HT Demucs small (1 s window)", HTDemucs, HTDEMUCS_SMALL, False)]
    rows, acceptance = [], []
    for name, cls, init_args, int8 in models:
        with tempfile.TemporaryDirectory() as folder:
            net = load_network(cls, init_args, int8, Path(folder))
        lag, declared, error = measured_latency(net)
        assert lag == declared and error < 1e-4, (name, lag, declared, error)
        versus = versus_reference(net, args.reference, mix, ref_hops) if cls is HSTasNet and not int8 else None
        for block in BLOCKS:
            times, cpu = block_times(net, mix, block)
            p50, p99, worst = (1e3 * statistics.median(times), 1e3 * _percentile(times, 0.99), 1e3 * max(times))
            cpu_p50, cpu_p99 = 1e3 * statistics.median(cpu), 1e3 * _percentile(cpu, 0.99)
            duration = 1e3 * block / SR
            ratio = ""
            if versus and block == 512:
                ours, theirs, ours_cpu, theirs_cpu = (1e3 * statistics.median(t) for t in versus)
                ratio = f"{ours / theirs:.3f} ({ours:.1f} / {theirs:.1f} ms); CPU {ours_cpu / theirs_cpu:.3f} " \
                        f"({ours_cpu:.1f} / {theirs_cpu:.1f} ms)"
            rows.append([name, "int8" if int8 else "fp32", f"{declared} ({1e3 * declared / SR:.1f} ms)", str(block),
                         f"{p50:.2f}", f"{p99:.2f}", f"{worst:.2f}", f"{p99 / duration:.2f}",
                         f"{cpu_p50:.2f}", f"{cpu_p99:.2f}", f"{cpu_p99 / duration:.2f}",
                         f"{sum(times) / (len(times) * block / SR):.3f}", ratio])
            if isinstance(net, HSTasNet) and not init_args.get("small") and block == 512:
                acceptance.append(f"{name} {'int8' if int8 else 'fp32'}: p99 {p99:.2f} ms per 512-sample hop "
                                  f"= {p99 / duration:.2f} of the hop's {duration:.1f} ms (goal <= 0.5); "
                                  f"CPU time p99 {cpu_p99:.2f} ms = {cpu_p99 / duration:.2f}")
            print(" | ".join(rows[-1]), flush=True)
        del net
    header = ["network", "weights", "latency (samples)", "block", "p50 ms", "p99 ms", "max ms", "p99 / block",
              "CPU p50 ms", "CPU p99 ms", "CPU p99 / block", "RTF", "ours / reference, p50 per hop: wall (ms); CPU time (ms)"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    table = "\n".join([
        f"One CPU thread (torch.set_num_threads(1)), {seconds:g} s stereo 44.1 kHz random mix, load average "
        f"{load}, torch {torch.__version__}.", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows), "", *(f"* {line}" for line in acceptance)])
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
