"""The models are the reference structure only: no inference or training speed tricks inside
(docs/architecture.md, "Speed tricks are not in the models"). The CPU inference rewrites live in
``stemsep.inference.cpu`` and find their targets by type; CPU training's sparse attention dropout
lives in ``stemsep.training.sparse_dropout``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from stemsep.models import HDemucs, HTDemucs
from stemsep.models.attention.layer import BackendAttention
from stemsep.models.layers import DecoderLayer, EncoderLayer

MODELS = Path(__file__).resolve().parents[2] / "src" / "stemsep" / "models"

# What a speed trick in a model looks like: a memory-layout choice, a hook for a rewrite to
# swap (``layout = staticmethod(...)``), the inference or training rewrites by name, a path taken
# only when gradients are recorded or on one device type.
TRICKS = {
    "memory layout": re.compile(r"channels_last|memory_format"),
    "layout hook": re.compile(r"\blayout\s*=\s*staticmethod|self\.layout\b|same_layout|\blayout\("),
    "inference rewrite": re.compile(r"optimize_for_cpu|restore_plain|inference\.cpu|cpu_channels_last"),
    "training rewrite": re.compile(r"sparse_dropout|poisson"),
    "grad-dependent path": re.compile(r"\.requires_grad\s+and|and\s+\w+\.requires_grad\b|if\s+\w+\.requires_grad"),
    "device-dependent path": re.compile(r"device\.type\s*==\s*[\"']cpu[\"']|\.is_cpu\b"),
}


def _sources() -> list[Path]:
    files = sorted(MODELS.rglob("*.py"))
    assert len(files) > 10 and MODELS / "layers.py" in files
    return files


@pytest.mark.parametrize("kind", sorted(TRICKS))
def test_model_sources_hold_no_speed_tricks(kind):
    pattern = TRICKS[kind]
    found = [f"{path.relative_to(MODELS)}:{number}: {line.strip()}"
             for path in _sources()
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"{kind} in stemsep.models (move it to stemsep.inference.cpu or stemsep.training):\n" + \
        "\n".join(found)


def test_the_patterns_catch_the_tricks_they_name():
    # what the models held before (issue 24): each line is caught by its pattern
    old = {"memory layout": "return x.contiguous(memory_format=torch.channels_last)",
           "layout hook": "    layout = staticmethod(same_layout)",
           "inference rewrite": ":func:`stemsep.inference.cpu.optimize_for_cpu` swaps in a CPU version",
           "training rewrite": "out = sparse_dropout_attention(q, k, v, p)",
           "grad-dependent path": "    if x.dim() == 4 and x.requires_grad:",
           "device-dependent path": "            if q.device.type == \"cpu\":"}
    assert old.keys() == TRICKS.keys()
    for kind, line in old.items():
        assert TRICKS[kind].search(line), kind
    assert TRICKS["layout hook"].search("    return layout(dconv(flat).view(b, f, c, t).permute(0, 2, 1, 3))")
    assert TRICKS["layout hook"].search("y = self.conv(self.layout(x, self.conv.weight) if self.freq else x)")
    # and the reference structure's own words are not
    for line in ["Constructor arguments, defaults and ``state_dict`` layout are those of",
                 "layout = mel_band_layout(sample_rate, stft_n_fft, num_bands)",
                 "indices = torch.arange(layout.shape[1]).expand_as(layout)[layout]",
                 "self.freqs = nn.Parameter(1.0 / theta ** exponents, requires_grad=False)"]:
        assert not any(pattern.search(line) for pattern in TRICKS.values()), line


@pytest.mark.parametrize("cls", [HTDemucs, HDemucs])
def test_model_modules_have_no_layout_attribute(cls):
    net = cls(sources=["a", "b"], channels=8, depth=3)
    kinds = {type(m) for m in net.modules()}
    assert {EncoderLayer, DecoderLayer} <= kinds
    assert not [name for name, m in net.named_modules() if hasattr(m, "layout")]
    if cls is HTDemucs:
        assert BackendAttention in kinds
    for module in net.modules():  # every module is a stemsep.models or torch class
        assert type(module).__module__.startswith(("stemsep.models.", "torch.nn.")), type(module)


def test_plain_glu_is_f_glu_also_with_gradients():
    # the layers compute F.glu whether or not autograd records (the a * sigmoid(b) form for
    # channels-last backward is the CPU rewrite's, stemsep.inference.cpu.layers)
    torch.manual_seed(0)
    layer = EncoderLayer(4, 8, freq=True)
    x = torch.randn(1, 4, 32, 10)
    seen = []
    layer.rewrite.register_forward_hook(lambda m, args, out: seen.append(out))
    y = layer(x)
    assert y.requires_grad and torch.equal(y, torch.nn.functional.glu(layer.norm2(seen[0]), dim=1))
    assert y.grad_fn.name() == "GluBackward0"
