"""Timing pieces the model benchmarks share (imported as ``_timing``: a benchmark run as a script has
its own folder on ``sys.path``).

Steps take ``(model, *, mix, target, device, dtype)``; :func:`alternating_medians` times one step on
several models, alternating their order between repetitions so machine load hits all alike.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time

import torch


def bench_device(name: str, threads: int | None = None) -> tuple[torch.device, str]:
    """The device to time on and how a result names it (the GPU's name, or ``cpu, N threads``); sets
    torch's CPU threads first when ``threads`` is given."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(name)
    return device, torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for ``dtype == "bf16"``, else nothing."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, device: torch.device) -> float:
    """Seconds ``fn()`` takes, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def forward_step(model, *, mix, target, device, dtype) -> None:
    """Inference: eval mode, no grad."""
    model.eval()
    with torch.no_grad(), autocast(device, dtype):
        model(mix)


def l1_train_step(model, *, mix, target, device, dtype) -> None:
    """Training: train mode, forward, L1 loss on the waveforms, backward."""
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        loss = (model(mix).float() - target).abs().mean()
    loss.backward()


def alternating_medians(models: dict, step, *, reps: int, mix, target, device: torch.device,
                        dtype: str) -> dict[str, float]:
    """Median seconds of ``step`` on each of ``models`` (by name): one warm-up call each (allocator,
    cuDNN/oneDNN plans), then ``reps`` rounds in the dict's order, reversed every other round."""
    run = functools.partial(step, mix=mix, target=target, device=device, dtype=dtype)
    for model in models.values():
        run(model)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            times[name].append(timed(functools.partial(run, models[name]), device))
    return {name: statistics.median(t) for name, t in times.items()}
