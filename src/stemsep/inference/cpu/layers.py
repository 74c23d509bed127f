"""Encoder/decoder layers handing their 2D convolutions channels-last inputs on CPU.

Same modules and weights as :mod:`stemsep.models.layers`; only the ``layout`` hook differs:
:func:`~stemsep.inference.cpu.predicates.cpu_channels_last` instead of the identity.
"""

from __future__ import annotations

from stemsep.inference.cpu.predicates import cpu_channels_last
from stemsep.models.layers import DecoderLayer, EncoderLayer


class CpuEncoderLayer(EncoderLayer):
    layout = staticmethod(cpu_channels_last)


class CpuDecoderLayer(DecoderLayer):
    layout = staticmethod(cpu_channels_last)
