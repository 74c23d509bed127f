"""Attention kernels, parameter-free, so the same weights run with every backend.

Each kernel takes ``q, k, v`` shaped ``(batch, heads, length, head_dim)`` (queries and keys
may have different lengths: cross-attention) and returns the attention output shaped like
``q`` (with ``v``'s last dimension). ``get_backend(name)`` returns the kernel:

* ``dense`` — exact ``softmax(q k^T / sqrt(d)) v`` through ``scaled_dot_product_attention``.
* ``lsh`` — LSH bucketed sparse attention in plain PyTorch (:mod:`.lsh_attention`): ~92 % of
  the query-key pairs skipped at Hybrid Transformer Demucs' 12.2 s shapes, deterministic.
* ``fast_transformers`` — improved clustered attention from the optional package
  pytorch-fast-transformers (:mod:`.fast_transformers_attention`), imported on first use.

Options may follow the name: ``"lsh:window=128,n_rounds=2"`` or
``"fast_transformers:clusters=64"`` (integer or boolean values), so configs can tune the
sparsity without code. ``available_backends()`` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from stemsep.models.attention.fast_transformers import FastTransformersAttention
from stemsep.models.attention.lsh import LSHAttention

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Full softmax attention through ``scaled_dot_product_attention``."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


# name -> factory taking the options of the name (keyword arguments).
_FACTORIES: dict[str, Callable[..., Kernel]] = {
    "dense": lambda: dense,
    "lsh": LSHAttention,
    "fast_transformers": FastTransformersAttention,
}
_CACHE: dict[str, Kernel] = {}


def available_backends() -> list[str]:
    return sorted(_FACTORIES)


def _parse_options(spec: str, text: str) -> dict[str, int | bool]:
    options: dict[str, int | bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"attention backend {spec!r}: option {item!r} is not key=value")
        value = value.strip().lower()
        if value in ("true", "false"):
            options[key.strip()] = value == "true"
        else:
            try:
                options[key.strip()] = int(value)
            except ValueError:
                raise ValueError(f"attention backend {spec!r}: option {item!r} needs an integer or boolean value") from None
    return options


def get_backend(name: str) -> Kernel:
    """The kernel for ``name`` (``"lsh"`` or ``"lsh:window=128"``); one shared instance per spec."""
    kernel = _CACHE.get(name)
    if kernel is not None:
        return kernel
    base, _, option_text = name.partition(":")
    factory = _FACTORIES.get(base.strip())
    if factory is None:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {available_backends()}")
    options = _parse_options(name, option_text)
    try:
        kernel = factory(**options)
    except TypeError:
        raise ValueError(f"attention backend {name!r}: unknown option among {sorted(options)}") from None
    _CACHE[name] = kernel
    return kernel
