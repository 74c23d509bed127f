"""Model speed: our HTDemucs / HDemucs against demucs 4.x, our RoFormers against bs-roformer, and
sparse vs dense attention.

Three parts:

1. **Models** — forward (eval, no grad) and training step (train mode, forward + L1 loss +
   backward) of ours and of the demucs reference built with the same config, the same weights
   (ours loads the reference's state_dict) and the same input. Repetitions alternate between
   the two implementations so machine load hits both alike; medians are reported with the
   ratio ours/ref (< 1: ours faster). Configs: ``htdemucs`` = the released HT Demucs
   (``bottom_channels=512, dconv_mode=3, t_dropout=0.02``) at ``--segment`` seconds;
   ``htdemucs_paper`` = demucs' ``HTDemucs`` defaults (transformer at 384 channels, as the paper
   describes it); ``hdemucs`` = Hybrid Demucs v3 defaults (the released ``hdemucs_mmi`` architecture).
2. **Attention** — the attention kernels alone, on the exact query/key lengths HT Demucs'
   cross-domain transformer sees at ``--attn-segment`` seconds (12.2 s: frequency branch
   8 x 526 = 4208 positions, time branch 2102; found by running a tiny HTDemucs with a hook),
   512 channels in 8 heads: per forward 3 self-attentions per branch and 2 cross-attentions
   each way. For each backend: time of those ten calls (forward; forward + backward), peak
   memory of the forward + backward (CUDA: ``max_memory_allocated``; CPU: resident-set
   growth, measured in a fresh subprocess per backend), and for ``lsh`` the fraction of
   query-key pairs skipped. ``dense`` is ``scaled_dot_product_attention`` (fused: flash /
   memory-efficient kernels, O(L) memory); ``dense_explicit`` materialises the softmax
   weights, the O(L^2)-memory baseline sparse attention papers compare with.

3. **RoFormers** — our BSRoFormer / MelBandRoFormer against the ``bs-roformer`` package (0.5.x)
   built from the same ``configs/model/<name>.yaml`` (``--roformer-configs``; the reference gets
   our extra keys' equivalents: BS-RoFormer's value residual, no DC zeroing, MSST's mask MLP
   width), same weights, same input of ``--roformer-segment`` seconds: forward and training
   step, interleaved, medians and ours/ref. Then the peak memory of our training step (forward
   + backward, batch ``--batch``) at ``--memory-segment`` seconds (default 8) with and without
   ``checkpoint_blocks``, each in a fresh process (CPU: resident-set growth, with glibc's mmap
   threshold fixed at 64 KiB so that freed buffers leave the resident set; CUDA:
   ``max_memory_allocated``), and their ratio.

Run (CPU figures in the report; about 4 minutes on 2 busy cores)::

    .venv/bin/python benchmarks/bench_models.py --segment 3 --batch 1 --reps 3

GPU, bf16 autocast::

    .venv/bin/python benchmarks/bench_models.py --device cuda --dtype bf16 --segment 7.8 --batch 4 --reps 10

``--only models`` / ``--only attention`` / ``--only roformers`` runs one part, e.g.::

    .venv/bin/python benchmarks/bench_models.py --only roformers --threads 1 --reps 3 --roformer-segment 3
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
from fractions import Fraction

import torch
from _timing import alternating_medians, autocast, forward_step, l1_train_step, timed

from stemsep import DEFAULT_SOURCES
from stemsep.inference.cpu import optimize_for_cpu, restore_plain
from stemsep.models import HDemucs, HTDemucs
from stemsep.models.attention.backends import get_backend
from stemsep.models.attention.fast_transformers import fast_transformers_available
from stemsep.models.attention.lsh import LSHAttention
from stemsep.training.sparse_dropout import apply_sparse_dropout

SR = 44100
HT_RELEASED = dict(bottom_channels=512, dconv_mode=3, t_dropout=0.02)


# -- part 1: models ---------------------------------------------------------------------------
def _model_pair(name: str, segment: float):
    import demucs.hdemucs
    import demucs.htdemucs

    torch.manual_seed(0)
    if name.startswith("htdemucs"):
        seg = Fraction(segment).limit_denominator(100)
        kwargs = dict(HT_RELEASED if name == "htdemucs" else {}, segment=seg)
        ref = demucs.htdemucs.HTDemucs(DEFAULT_SOURCES, **kwargs)
        ours = HTDemucs(DEFAULT_SOURCES, **kwargs)
    else:
        ref = demucs.hdemucs.HDemucs(DEFAULT_SOURCES)
        ours = HDemucs(DEFAULT_SOURCES)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _report(rows: list[dict], name: str, step_name: str, med: dict[str, float], width: int) -> None:
    """One row (ours / ref medians and their ratio) into ``rows`` and onto stdout."""
    rows.append({"config": name, "step": step_name, "ours_s": med["ours"], "ref_s": med["ref"],
                 "ratio": med["ours"] / med["ref"]})
    print(f"  {name:{width}s} {step_name:10s} ours {med['ours']:8.3f} s   ref {med['ref']:8.3f} s   "
          f"ours/ref {med['ours'] / med['ref']:.3f}", flush=True)


def bench_models(args, device: torch.device) -> list[dict]:
    rows = []
    length = int(args.segment * SR)
    for name in args.configs:
        ours, ref = _model_pair(name, args.segment)
        models = {"ours": ours.to(device), "ref": ref.to(device)}
        torch.manual_seed(1)
        mix = torch.randn(args.batch, 2, length, device=device)
        target = torch.randn(args.batch, len(DEFAULT_SOURCES), 2, length, device=device)

        for step_name, step in (("forward", forward_step), ("train step", l1_train_step)):
            # inference on CPU runs what `stemsep separate` runs (the load-time CPU rewrites);
            # training runs the plain modules
            (optimize_for_cpu if step_name == "forward" and device.type == "cpu" else restore_plain)(ours)
            if step_name == "train step" and device.type == "cpu":
                apply_sparse_dropout(ours)  # what stemsep fit trains with on CPU (SeparationModule.on_fit_start)
            med = alternating_medians(models, step, reps=args.reps, mix=mix, target=target, device=device,
                                      dtype=args.dtype)
            _report(rows, name, step_name, med, 9)
        del models, ours, ref
    return rows


# -- part 2: attention alone ------------------------------------------------------------------
def transformer_lengths(segment: float) -> tuple[int, int]:
    """(frequency-branch positions, time-branch positions) entering HT Demucs' transformer."""
    seen = {}
    model = HTDemucs(DEFAULT_SOURCES, channels=8, t_layers=1, t_heads=1, segment=Fraction(segment).limit_denominator(100))

    def hook(_module, inputs):
        x, xt = inputs
        seen["freq"], seen["time"] = x.shape[2] * x.shape[3], xt.shape[2]

    model.crosstransformer.register_forward_pre_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 2, int(segment * SR)))
    return seen["freq"], seen["time"]


def attention_calls(lf: int, lt: int) -> list[tuple[int, int]]:
    """(Lq, Lk) of the attention calls in one forward of the 5-layer cross-domain transformer."""
    return [(lf, lf), (lt, lt)] * 3 + [(lf, lt), (lt, lf)] * 2


def _attention_inputs(calls, batch, device, dtype, requires_grad):
    g = torch.Generator().manual_seed(0)
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    tensors = []
    for lq, lk in calls:
        q, k, v = (torch.randn(batch, 8, n, 64, generator=g).to(device, dt) for n in (lq, lk, lk))
        if requires_grad:
            q, k, v = (t.requires_grad_() for t in (q, k, v))
        tensors.append((q, k, v))
    return tensors


def _run_attention(kernel, inputs, backward: bool) -> None:
    outs = [kernel(q, k, v) for q, k, v in inputs]
    if backward:
        torch.autograd.backward([o.float().sum() for o in outs])


def dense_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Textbook attention that materialises the (Lq, Lk) weights: the O(L^2)-memory baseline."""
    weights = torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
    return weights @ v


def _kernel(name: str):
    return dense_explicit if name == "dense_explicit" else get_backend(name)


def attention_memory_probe(backend: str, lf: int, lt: int, batch: int, device: torch.device, dtype: str) -> float:
    """Peak extra memory (MiB) of forward + backward of the ten calls; run in a fresh process on CPU."""
    kernel = _kernel(backend)
    inputs = _attention_inputs(attention_calls(lf, lt), batch, device, dtype, True)
    kernel(*_attention_inputs([(256, 256)], batch, device, dtype, False)[0])  # lazy init outside the peak
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _run_attention(kernel, inputs, True)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base = _proc_status_kib("VmRSS")
    reset = _reset_peak_rss()
    _run_attention(kernel, inputs, True)
    # VmHWM after a reset is this run's peak; without the reset (no /proc/self/clear_refs) the
    # process-lifetime peak is used, which a fresh process keeps close to the same thing.
    peak = _proc_status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0.0, (peak - base) / 1024)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _memory_in_subprocess(backend: str, lf: int, lt: int, args) -> float:
    cmd = [sys.executable, __file__, "--_memory-probe", backend, "--_lengths", f"{lf},{lt}",
           "--batch", str(args.attn_batch), "--device", args.device, "--dtype", args.dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def bench_attention(args, device: torch.device) -> list[dict]:
    lf, lt = transformer_lengths(args.attn_segment)
    calls = attention_calls(lf, lt)
    print(f"  transformer lengths at {args.attn_segment} s: frequency branch {lf}, time branch {lt}; "
          f"{len(calls)} attention calls, batch {args.attn_batch}, 8 heads x 64", flush=True)
    backends = ["dense", "dense_explicit", "lsh"] + (["fast_transformers"] if fast_transformers_available() else [])
    kernels = {name: _kernel(name) for name in backends}
    fwd_inputs = _attention_inputs(calls, args.attn_batch, device, args.dtype, False)
    bwd_inputs = _attention_inputs(calls, args.attn_batch, device, args.dtype, True)
    times: dict[str, dict[str, list[float]]] = {name: {"forward": [], "fwd+bwd": []} for name in backends}
    for name in backends:  # warm-up
        _run_attention(kernels[name], fwd_inputs, False)
    for rep in range(args.reps):
        order = backends if rep % 2 == 0 else backends[::-1]
        for name in order:
            with torch.no_grad():
                times[name]["forward"].append(
                    timed(functools.partial(_run_attention, kernels[name], fwd_inputs, False), device))
            times[name]["fwd+bwd"].append(
                timed(functools.partial(_run_attention, kernels[name], bwd_inputs, True), device))
            for q, k, v in bwd_inputs:
                q.grad = k.grad = v.grad = None
    lsh: LSHAttention = kernels["lsh"]
    pairs = sum(lq * lk for lq, lk in calls)
    skipped = sum(lsh.sparsity(lq, lk) * lq * lk for lq, lk in calls) / pairs
    rows = []
    dense = {step: statistics.median(t) for step, t in times["dense"].items()}
    for name in backends:
        med = {step: statistics.median(t) for step, t in times[name].items()}
        if device.type == "cuda":
            peak = attention_memory_probe(name, lf, lt, args.attn_batch, device, args.dtype)
        else:
            peak = _memory_in_subprocess(name, lf, lt, args)
        row = {"backend": name, "forward_s": med["forward"], "fwd_bwd_s": med["fwd+bwd"],
               "forward_vs_dense": med["forward"] / dense["forward"],
               "fwd_bwd_vs_dense": med["fwd+bwd"] / dense["fwd+bwd"], "peak_mib": peak,
               "sparsity": skipped if name == "lsh" else (0.0 if name == "dense" else None)}
        rows.append(row)
        sparsity = "" if row["sparsity"] is None else f"   pairs skipped {row['sparsity']:.1%}"
        print(f"  {name:17s} forward {med['forward']:7.3f} s ({row['forward_vs_dense']:.2f}x dense)   "
              f"fwd+bwd {med['fwd+bwd']:7.3f} s ({row['fwd_bwd_vs_dense']:.2f}x dense)   "
              f"peak {peak:8.1f} MiB{sparsity}", flush=True)
    return rows


# -- part 3: RoFormers against bs-roformer ------------------------------------------------------
ROFORMER_CONFIGS = ("bs_roformer_small", "mel_band_roformer_small", "bs_roformer", "mel_band_roformer")
_OURS_ONLY = ("sources", "segment", "samplerate", "checkpoint_blocks", "value_residual", "zero_dc",
              "mlp_expansion_factor")


def _roformer_pair(name: str, checkpoint_blocks: bool = False):
    """(ours, reference) from configs/model/<name>.yaml with the same (random) weights."""
    from pathlib import Path

    import yaml

    from stemsep.models import BSRoFormer, MelBandRoFormer

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "model" / f"{name}.yaml")
                            .read_text())["init_args"]
    bs = name.startswith("bs")
    import bs_roformer.bs_roformer as ref_bs
    import bs_roformer.mel_band_roformer as ref_mel

    module = ref_bs if bs else ref_mel
    ref_kwargs = {k: v for k, v in config.items() if k not in _OURS_ONLY}
    ref_kwargs["num_stems"] = len(config["sources"])
    if "freqs_per_bands" in ref_kwargs:
        ref_kwargs["freqs_per_bands"] = tuple(ref_kwargs["freqs_per_bands"])
    if not bs:
        ref_kwargs.setdefault("linear_transformer_depth", 0)  # MSST's default, which ours follows
    torch.manual_seed(0)
    original = module.MaskEstimator  # 0.5.1 has no mlp_expansion_factor keyword: build with it
    module.MaskEstimator = functools.partial(original, mlp_expansion_factor=config.get("mlp_expansion_factor", 4))
    try:
        ref = (module.BSRoformer if bs else module.MelBandRoformer)(**ref_kwargs)
    finally:
        module.MaskEstimator = original
    extra = {"value_residual": True} if bs else {}
    ours = (BSRoFormer if bs else MelBandRoFormer)(**config, zero_dc=False, checkpoint_blocks=checkpoint_blocks,
                                                  **extra)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def bench_roformers(args, device: torch.device) -> list[dict]:
    rows = []
    length = int(args.roformer_segment * SR)
    for name in args.roformer_configs:
        ours, ref = _roformer_pair(name)
        models = {"ours": ours.to(device), "ref": ref.to(device)}
        torch.manual_seed(1)
        mix = torch.randn(args.batch, 2, length, device=device)
        target = torch.randn(args.batch, len(ours.sources), 2, length, device=device)
        for step_name, step in (("forward", forward_step), ("train step", _roformer_train_step)):
            med = alternating_medians(models, step, reps=args.reps, mix=mix, target=target, device=device,
                                      dtype=args.dtype)
            _report(rows, name, step_name, med, 24)
        del models, ours, ref
        if args.memory_segment <= 0:
            continue
        peaks = {}
        for blocks in (False, True):
            if device.type == "cuda":
                peaks[blocks] = roformer_memory_probe(name, blocks, args.memory_segment, args.batch, device, args.dtype)
            else:
                cmd = [sys.executable, __file__, "--_roformer-memory", name, "--_blocks", str(int(blocks)),
                       "--memory-segment", str(args.memory_segment), "--batch", str(args.batch), "--device",
                       args.device, "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
                # glibc's dynamic mmap threshold keeps freed large buffers in the heap, so the resident
                # set would track past peaks rather than live tensors: fix the threshold in the probe
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
                peaks[blocks] = float(json.loads(out.strip().splitlines()[-1])["peak_mib"])
        ratio = peaks[True] / peaks[False]
        rows.append({"config": name, "step": f"train step memory at {args.memory_segment} s",
                     "plain_mib": peaks[False], "checkpoint_blocks_mib": peaks[True], "ratio": ratio})
        print(f"  {name:24s} train-step peak memory at {args.memory_segment:g} s: plain {peaks[False]:9.1f} MiB   "
              f"checkpoint_blocks {peaks[True]:9.1f} MiB   ratio {ratio:.3f}", flush=True)
    return rows


def _roformer_train_step(model, *, mix, target, device, dtype) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        out = model(mix)
    out = out if out.dim() == 4 else out[:, None]  # the reference drops the stem axis for one stem
    loss = (out.float() - target[..., :out.shape[-1]]).abs().mean()
    loss.backward()


def roformer_memory_probe(name: str, blocks: bool, segment: float, batch: int, device: torch.device,
                          dtype: str) -> float:
    """Peak extra memory (MiB) of one training step of our network (the first step is a warm-up)."""
    ours, _ = _roformer_pair(name, checkpoint_blocks=blocks)
    ours = ours.to(device)
    mix = torch.randn(batch, 2, int(segment * SR), device=device)
    target = torch.randn(batch, len(ours.sources), 2, mix.shape[-1], device=device)
    short = mix[..., :SR // 4], target[..., :SR // 4]
    _roformer_train_step(ours, mix=short[0], target=short[1], device=device, dtype=dtype)  # lazy init
    ours.zero_grad(set_to_none=False)  # gradients allocated before the peak is taken
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _roformer_train_step(ours, mix=mix, target=target, device=device, dtype=dtype)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base = _proc_status_kib("VmRSS")
    reset = _reset_peak_rss()
    _roformer_train_step(ours, mix=mix, target=target, device=device, dtype=dtype)
    peak = _proc_status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0.0, (peak - base) / 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--segment", type=float, default=3.0, help="model input seconds (default 3)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["htdemucs", "hdemucs"], choices=["htdemucs", "htdemucs_paper", "hdemucs"])
    parser.add_argument("--attn-segment", type=float, default=12.2, help="segment for the attention part")
    parser.add_argument("--attn-batch", type=int, default=1)
    parser.add_argument("--roformer-configs", nargs="+", default=list(ROFORMER_CONFIGS[:2]),
                        choices=ROFORMER_CONFIGS, help="configs/model names for the RoFormer part")
    parser.add_argument("--roformer-segment", type=float, default=3.0, help="input seconds for RoFormer timing")
    parser.add_argument("--memory-segment", type=float, default=8.0, help="segment of the RoFormer memory probe (0: no probe)")
    parser.add_argument("--only", choices=["models", "attention", "roformers"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--_memory-probe", dest="memory_probe", help=argparse.SUPPRESS)
    parser.add_argument("--_lengths", dest="lengths", help=argparse.SUPPRESS)
    parser.add_argument("--_roformer-memory", dest="roformer_memory", help=argparse.SUPPRESS)
    parser.add_argument("--_blocks", dest="blocks", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.roformer_memory:
        peak = roformer_memory_probe(args.roformer_memory, bool(args.blocks), args.memory_segment, args.batch,
                                     device, args.dtype)
        print(json.dumps({"peak_mib": peak}))
        return 0
    if args.memory_probe:
        lf, lt = map(int, args.lengths.split(","))
        peak = attention_memory_probe(args.memory_probe, lf, lt, args.batch, device, args.dtype)
        print(json.dumps({"peak_mib": peak}))
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device {name}, dtype {args.dtype}, torch {torch.__version__}", flush=True)
    results = {}
    if args.only in (None, "models"):
        print(f"models: batch {args.batch}, segment {args.segment} s, median of {args.reps} interleaved reps")
        results["models"] = bench_models(args, device)
    if args.only in (None, "attention"):
        print(f"attention kernels alone: median of {args.reps} interleaved reps")
        results["attention"] = bench_attention(args, device)
    if args.only in (None, "roformers"):
        print(f"roformers: ours vs bs-roformer, batch {args.batch}, {args.roformer_segment} s input, median of "
              f"{args.reps} interleaved reps; memory at {args.memory_segment} s")
        results["roformers"] = bench_roformers(args, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
