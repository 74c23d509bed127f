"""apply_model: parity with demucs' apply_model, batching, shifts, bags, plain modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stemsep.inference.bag import BagOfModels
from stemsep.inference.chunked import Chunking, apply_model, transition_weight

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 8000


@pytest.fixture(scope="module")
def demucs_nets():
    """Tiny demucs HTDemucs (segment 1 s) and HDemucs (segment 1.5 s) at 8 kHz, seeded."""
    htdemucs = pytest.importorskip("demucs.htdemucs")
    hdemucs = pytest.importorskip("demucs.hdemucs")
    torch.manual_seed(0)
    ht = htdemucs.HTDemucs(SOURCES, channels=8, depth=2, t_layers=1, segment=1, nfft=256,
                           samplerate=SR, t_heads=2).eval()
    hd = hdemucs.HDemucs(SOURCES, channels=8, depth=4, nfft=1024, segment=1.5, samplerate=SR).eval()
    return {"htdemucs": ht, "hdemucs": hd}


@pytest.fixture(scope="module")
def mix():
    torch.manual_seed(1)
    return torch.randn(2, 2, 3 * SR + 123)


@pytest.mark.parametrize("name", ["htdemucs", "hdemucs"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_matches_demucs_apply_model(demucs_nets, mix, name, batch_size):
    from demucs.apply import apply_model as demucs_apply

    net = demucs_nets[name]
    expected = demucs_apply(net, mix, shifts=0, split=True, overlap=0.25)
    with torch.inference_mode():
        ours = apply_model(net, mix, shifts=0, split=True, overlap=0.25, batch_size=batch_size)
    assert ours.shape == (2, 4, 2, mix.shape[-1])
    assert (ours - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["htdemucs", "hdemucs"])
def test_matches_demucs_other_settings(demucs_nets, mix, name):
    from demucs.apply import apply_model as demucs_apply

    net = demucs_nets[name]
    short = mix[..., :SR]
    expected = demucs_apply(net, short, shifts=0, split=False)
    assert (apply_model(net, short, split=False) - expected).abs().max() <= 1e-4
    expected = demucs_apply(net, mix, shifts=0, overlap=0.5, transition_power=2.0, segment=0.75)
    ours = apply_model(net, mix, overlap=0.5, transition_power=2.0, segment=0.75, batch_size=4)
    assert (ours - expected).abs().max() <= 1e-4


def test_shifts_match_demucs_for_same_offsets(demucs_nets, mix, monkeypatch):
    """With the same random offsets, the shift trick gives demucs' result (any batch size)."""
    import itertools
    import random

    from demucs.apply import apply_model as demucs_apply

    net = demucs_nets["hdemucs"]
    draws = itertools.cycle([1000, 3500, 0])
    monkeypatch.setattr(random, "randint", lambda a, b: next(draws))
    expected = demucs_apply(net, mix, shifts=3)
    draws = itertools.cycle([1000, 3500, 0])
    # ours draws from its own seeded generator (random.Random(seed)), not the module-level one
    monkeypatch.setattr(random.Random, "randint", lambda self, a, b: next(draws))
    ours = apply_model(net, mix, shifts=3, batch_size=5)
    assert (ours - expected).abs().max() <= 1e-4


def test_bag_matches_demucs_bag(demucs_nets, mix):
    from demucs.apply import BagOfModels as DemucsBag
    from demucs.apply import apply_model as demucs_apply

    nets = [demucs_nets["htdemucs"], demucs_nets["hdemucs"]]
    weights = [[1, 0, 1, 1], [1, 2, 1, 0.5]]
    expected = demucs_apply(DemucsBag(nets, weights=weights), mix, shifts=0)
    bag = BagOfModels(nets, weights=weights)
    assert bag.segment == 1
    assert (apply_model(bag, mix, batch_size=2) - expected).abs().max() <= 1e-4
    # forward: one-shot weighted mean of members.
    short = mix[..., :SR]
    with torch.no_grad():
        one_shot = bag(short)
        manual = (nets[0](short) * torch.tensor(weights[0])[:, None, None]
                  + nets[1](short) * torch.tensor(weights[1])[:, None, None]) / torch.tensor([2, 2, 2, 1.5])[:, None, None]
    assert torch.allclose(one_shot, manual, atol=1e-6)


class Gain(nn.Module):
    """Position-independent toy separator: source k = (k + 1) * mix."""

    sources = ["a", "b", "c"]
    samplerate = 100
    audio_channels = 2

    def __init__(self, segment=None):
        super().__init__()
        self.scale = nn.Parameter(torch.arange(1.0, 4.0))
        self.calls: list[int] = []
        if segment is not None:
            self.segment = segment

    def forward(self, mix):
        self.calls.append(mix.shape[0])
        return self.scale[None, :, None, None] * mix[:, None]


def test_plain_module_chunking_is_exact_and_batched():
    mix = torch.randn(3, 2, 1234)
    net = Gain(segment=2.0)  # 200-sample chunks, stride 150
    out = apply_model(net, mix, batch_size=4)
    assert torch.allclose(out, net.scale[None, :, None, None] * mix[:, None], atol=1e-5)
    n_chunks = len(Chunking(overlap=0.25).plan(net, [1234] * 3))
    assert sum(net.calls) == n_chunks and max(net.calls) == 4
    # Without a segment the whole input is one chunk.
    whole = Gain()
    out = apply_model(whole, mix, batch_size=2, shifts=2)
    assert whole.calls == [2, 1, 2, 1]
    assert torch.allclose(out, whole.scale[None, :, None, None] * mix[:, None], atol=1e-5)


def test_transition_weight_is_triangular():
    w = transition_weight(6)
    assert torch.allclose(w, torch.tensor([1, 2, 3, 3, 2, 1]) / 3)
    assert transition_weight(5).argmax() in (2,)


def test_bad_arguments():
    with pytest.raises(ValueError):
        apply_model(Gain(), torch.randn(2, 10))
    with pytest.raises(ValueError):
        apply_model(Gain(), torch.randn(1, 2, 10), overlap=1.0)


def test_apply_model_many_batches_files_of_different_lengths(demucs_nets):
    from stemsep.inference.chunked import apply_model_many

    torch.manual_seed(3)
    mixes = [torch.randn(2, n) for n in (SR // 2, SR + 77, 2 * SR + 5)]
    for name, net in demucs_nets.items():
        calls = []
        hook = net.register_forward_hook(lambda m, i, o, calls=calls: calls.append(i[0].shape[0]))
        together = apply_model_many(net, mixes, batch_size=8)
        hook.remove()
        if name == "htdemucs":  # every chunk has one input size: all six in one call
            assert calls == [6]
        for mix, out in zip(mixes, together, strict=True):
            alone = apply_model(net, mix[None])[0]
            assert out.shape == alone.shape
            assert (out - alone).abs().max() <= 1e-4


def test_shifts_longer_than_the_segment():
    """A segment shorter than the largest shift (0.5 s): chunks wholly inside the shift's leading
    zeros are zeros, not a crash (negative pad), and a linear net is still exact."""
    mix = torch.randn(1, 2, 1234)
    net = Gain(segment=0.2)  # 20 samples at 100 Hz, under the 50-sample (0.5 s) largest shift
    torch.manual_seed(0)
    out = apply_model(net, mix, shifts=2)
    assert torch.allclose(out, net.scale[None, :, None, None] * mix[:, None], atol=1e-5)
