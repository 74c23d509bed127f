"""The chunk geometry is worked out in one place: :class:`stemsep.inference.chunked.Chunking`.

By construction: the stride rule ``(1 - overlap) * segment`` appears in no other module, the
context rule (``contract.input_length``) is read by no other module, and ``chunked`` exposes no
other public geometry helper. Then what Chunking answers is checked against the rules themselves.
"""

from __future__ import annotations

import ast
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import stemsep.inference.chunked as chunked
from helpers import TinyNet
from stemsep.errors import BadArgumentError
from stemsep.inference.bag import BagOfModels
from stemsep.inference.chunked import Chunking

SRC = Path(chunked.__file__).resolve().parents[1]
HOME = Path(chunked.__file__).resolve()


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _mentions_overlap(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and "overlap" in n.id) or (isinstance(n, ast.Attribute) and "overlap" in n.attr)
               for n in ast.walk(node))


def test_no_other_module_computes_a_stride():
    found = []
    for path, tree in _modules():
        if path == HOME:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and isinstance(node.left, ast.Constant)
                    and node.left.value == 1 and _mentions_overlap(node.right)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"a chunk stride computed outside Chunking: {found}"


def test_no_other_module_reads_the_context_rule():
    found = []
    for path, tree in _modules():
        if path in (HOME, SRC / "contract.py"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "stemsep.contract":
                found += [f"{path.relative_to(SRC)}:{node.lineno}" for a in node.names if a.name == "input_length"]
            if isinstance(node, ast.Attribute) and node.attr == "input_length" and \
                    isinstance(node.value, ast.Name) and node.value.id == "contract":
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"the chunk context rule read outside Chunking: {found}"


def test_chunked_exposes_only_chunking_for_geometry():
    public = {name for name, value in vars(chunked).items()
              if not name.startswith("_") and getattr(value, "__module__", None) == chunked.__name__}
    assert public == {"Chunking", "WindowPlan", "apply_model", "apply_model_many", "member_scales", "transition_weight"}


class Padded(TinyNet):
    """Wants 100 samples of context on each side of any input (``valid_length``)."""

    segment = Fraction(1, 4)

    def valid_length(self, length: int) -> int:
        return length + 200

    def forward(self, mix):
        return super().forward(mix)


def test_geometry_for_a_network():
    net = Padded(samplerate=1000)
    chunking = Chunking(overlap=0.25)
    assert chunking.samples(net) == 250 and chunking.stride(net) == 187  # int(0.75 * 250)
    assert chunking.input_length(net, 250) == 450
    plan = chunking.plan(net, [600, 100])
    assert [(c.item, c.offset, c.length) for c in plan] == [(0, 0, 250), (0, 187, 250), (0, 374, 226),
                                                             (0, 561, 39), (1, 0, 100)]
    assert chunking.chunk_count(net, 600) == 4
    assert Chunking(split=False).samples(net) is None and Chunking(split=False).chunk_count(net, 600) == 1
    assert Chunking(segment=0.5).samples(net) == 500
    plan = chunking.window_plan(net, window=2.0)
    assert plan.align == 187 and plan.margin == 250 + 200 + 1 and plan.length == 2000 + 2 * 451 + 187
    assert Chunking().window_plan(TinyNet(), window=2.0) is None  # no segment: whole inputs only


def test_bag_windows_align_to_every_member():
    a, b = Padded(samplerate=1000), Padded(samplerate=1000)
    b.segment = Fraction(3, 10)
    plan = Chunking(overlap=0.5).window_plan(BagOfModels([a, b]), window=1.0)
    assert plan.align == 750  # lcm of the 125- and 150-sample strides


@pytest.mark.parametrize("bad,word", [(dict(overlap=1.0), "--overlap"), (dict(segment=0), "--segment"),
                                      (dict(batch_size=0), "--batch-size"), (dict(shifts=-1), "--shifts"),
                                      (dict(transition_power=0.5), "transition_power"), (dict(seed=-1), "--seed")])
def test_options_checked_once_when_built(bad, word):
    with pytest.raises(BadArgumentError, match=word):
        Chunking(**bad)


def test_apply_model_takes_a_chunking_or_its_options_not_both():
    net, mix = Padded(samplerate=1000), torch.randn(1, 2, 700)
    torch.testing.assert_close(chunked.apply_model(net, mix, Chunking(overlap=0.5)),
                               chunked.apply_model(net, mix, overlap=0.5), rtol=0, atol=0)
    with pytest.raises(TypeError, match="not both"):
        chunked.apply_model(net, mix, Chunking(), overlap=0.5)
