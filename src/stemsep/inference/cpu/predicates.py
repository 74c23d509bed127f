"""When the CPU inference rewrites take their fast paths (same values, other kernels).

oneDNN handles a few of the hybrid models' shapes poorly on CPU (channels-fastest rows with
few channels, tiny 1x1 convolutions over many rows, 2D convolutions in the default layout), so
:func:`stemsep.inference.cpu.optimize_for_cpu` swaps in modules computing the same thing with
matrix products and channels-last layouts: :class:`~stemsep.inference.cpu.pointwise.PointwiseConv1d`,
:class:`~stemsep.inference.cpu.tapconv.TapConv1d`, DConv's fused tail and the layers' layout
choices. Even once swapped in, they take their fast path only for float32 CPU tensors in eager
mode without autograd recording; otherwise (GPU, autocast, gradients, tracing or export) they run
the plain modules' computation.
"""

from __future__ import annotations

import torch


def exporting() -> bool:
    """Whether a TorchScript trace, ``torch.export`` or ONNX export is recording the forward."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def cpu_fast_path(x: torch.Tensor) -> bool:
    """Whether ``x`` may take a CPU fast path: float32 on CPU, no CPU autocast, not exporting."""
    return x.is_cpu and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and not exporting()


def cpu_inference_path(x: torch.Tensor) -> bool:
    """:func:`cpu_fast_path` without autograd recording: rewrites whose backward costs more than
    the plain modules' (slice-wise adds, many small ops) are for inference only."""
    return not torch.is_grad_enabled() and cpu_fast_path(x)


def channels_fastest(x: torch.Tensor) -> bool:
    """Whether ``(N, C, T)`` ``x`` has channels as its fastest axis (a channels-last view), T > 1."""
    return x.stride(1) == 1 and x.shape[-1] > 1


def cpu_channels_last(x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The memory layout a 4D CPU input of a conv with ``weight`` runs fastest in (3D, GPU,
    autocast and export: ``x`` unchanged).

    oneDNN's 2D convolutions and transposed convolutions over (frequency, time) run about
    1.3-3x faster on CPU channels-last than in the default layout; values are unchanged.
    Where the convolution's ``weight`` is larger than the input (the deepest layers: few
    positions, many channels), oneDNN would reorder that weight on every call, forward and
    backward, so such inputs get (or go back to) the default layout. Without ``weight`` (the
    encoder's 1x1 rewrite, whose weight is small next to its input): channels-last.
    """
    if x.dim() != 4 or not cpu_fast_path(x):
        return x
    if weight is not None and weight.numel() > x.numel():
        return x.contiguous()
    return x.contiguous(memory_format=torch.channels_last)
