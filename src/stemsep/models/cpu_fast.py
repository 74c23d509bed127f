"""When the models take their CPU-only fast paths (same values, other kernels).

oneDNN handles a few of the hybrid models' shapes poorly on CPU (channels-fastest rows with
few channels, tiny 1x1 convolutions over many rows), so some modules compute the same thing
with matrix products instead: :class:`~stemsep.models.pointwise.PointwiseConv1d`,
:class:`~stemsep.models.tapconv.TapConv1d` and DConv's fused tail (the last two in inference
only: in training their backward measured slower than the plain modules'). They apply to float32
CPU tensors in eager mode only: GPUs and autocast keep the plain kernels, and tracing or export
records the plain modules (portable graphs, shapes not frozen into branch choices).
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
