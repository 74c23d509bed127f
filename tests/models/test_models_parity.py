"""Parity of our HDemucs / HTDemucs with demucs 4.x (the reference, used only as an oracle).

Each test builds the reference with random init, loads its state_dict into ours with
``strict=True`` and compares outputs on a stereo input whose length is not a multiple of
the hop or the segment.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from stemsep.errors import StemsepError
from stemsep.models import HDemucs, HTDemucs

demucs_htdemucs = pytest.importorskip("demucs.htdemucs")
demucs_hdemucs = pytest.importorskip("demucs.hdemucs")

SOURCES = ["drums", "bass", "other", "vocals"]
SR = 44100
TOL = 1e-4

HT_SMALL = dict(channels=8, depth=4, nfft=4096, t_layers=2, t_heads=4, segment=1)
H_SMALL = dict(channels=8, depth=5, nfft=1024, dconv_lstm=3, dconv_attn=3)
HT_RELEASED = dict(bottom_channels=512, dconv_mode=3, t_dropout=0.02, segment=Fraction(39, 5))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pair(ref_cls, ours_cls, kwargs: dict, seed: int = 0):
    torch.manual_seed(seed)
    ref = ref_cls(SOURCES, **kwargs)
    ours = ours_cls(SOURCES, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert _count(ours) == _count(ref)
    return ref, ours


def _compare(ref, ours, length: int, train: bool = False, batch: int = 1) -> torch.Tensor:
    ref.train(train)
    ours.train(train)
    torch.manual_seed(1)
    mix = torch.randn(batch, 2, length)
    with torch.no_grad():
        expected = ref(mix)
        got = ours(mix)
    assert got.shape == expected.shape == (batch, len(SOURCES), 2, length)
    assert (got - expected).abs().max().item() <= TOL
    return got


# -- HDemucs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [{}, {"hybrid": False}, {"cac": False, "wiener_iters": -1, "end_iters": -1},
                                   {"hybrid_old": True}, {"dconv_mode": 3, "channels_time": 12}])
def test_hdemucs_small_matches_reference(extra):
    ref, ours = _pair(demucs_hdemucs.HDemucs, HDemucs, {**H_SMALL, **extra})
    # 1.5 s: long enough for the DConv BiLSTM to work in overlapping windows (> 200 steps)
    _compare(ref, ours, int(1.5 * SR) + 123)


def test_hdemucs_small_train_mode_and_gradients_match():
    ref, ours = _pair(demucs_hdemucs.HDemucs, HDemucs, H_SMALL)
    ref.train()
    ours.train()
    mix = torch.randn(2, 2, SR // 2 + 7)
    ref(mix).square().mean().backward()
    ours(mix).square().mean().backward()
    ref_grads = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        expected = ref_grads[name].grad
        assert torch.allclose(param.grad, expected, atol=1e-5, rtol=1e-3), name


@pytest.mark.slow
def test_hdemucs_default_matches_reference():
    ref, ours = _pair(demucs_hdemucs.HDemucs, HDemucs, {})
    assert _count(ours) == 83_637_832
    _compare(ref, ours, 2 * SR + 321)


def test_hdemucs_short_input_uses_safe_reflect_padding():
    ref, ours = _pair(demucs_hdemucs.HDemucs, HDemucs, H_SMALL)
    _compare(ref, ours, 300)


# -- HTDemucs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [
    {},
    {"bottom_channels": 32, "dconv_mode": 3},
    {"t_emb": "cape"},
    {"t_emb": "scaled", "t_cross_first": True},
    {"t_norm_first": False, "t_group_norm": True, "t_norm_in": False, "t_norm_in_group": True},
    {"t_layer_scale": False, "t_gelu": False, "t_layers": 3, "t_weight_pos_embed": 0.5},
    {"t_layers": 0},
])
def test_htdemucs_small_matches_reference(extra):
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, {**HT_SMALL, **extra})
    _compare(ref, ours, int(0.7 * SR) + 5)  # shorter than the 1 s segment: padded, then trimmed


def test_htdemucs_small_train_mode_matches_and_records_segment():
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, HT_SMALL)
    length = int(1.2 * SR) + 3
    _compare(ref, ours, length, train=True, batch=2)
    assert ours.segment == Fraction(length, SR) == ref.segment


def test_htdemucs_small_gradients_match():
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, {**HT_SMALL, "bottom_channels": 16})
    ref.train()
    ours.train()
    mix = torch.randn(2, 2, SR // 2 + 11)
    ref(mix).square().mean().backward()
    ours(mix).square().mean().backward()
    ref_grads = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.allclose(param.grad, ref_grads[name].grad, atol=1e-5, rtol=1e-3), name


def test_htdemucs_without_train_segment_keeps_length():
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, {**HT_SMALL, "use_train_segment": False})
    _compare(ref, ours, int(1.3 * SR) + 1)


def test_htdemucs_longer_than_segment_in_eval_is_processed_whole():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **HT_SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, int(1.5 * SR) + 9))
    assert out.shape == (1, 4, 2, int(1.5 * SR) + 9)
    with pytest.raises(StemsepError):
        model.valid_length(int(1.5 * SR))


def test_htdemucs_paper_default_matches_reference():
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, {"segment": 1})
    assert _count(ours) == 26_899_536
    _compare(ref, ours, int(0.8 * SR) + 77)


@pytest.mark.slow
def test_htdemucs_released_config_matches_reference():
    ref, ours = _pair(demucs_htdemucs.HTDemucs, HTDemucs, {**HT_RELEASED, "segment": 2})
    assert _count(ours) == 41_984_456
    _compare(ref, ours, int(1.4 * SR) + 77)


def test_sparse_checkpoint_layout_loads():
    kwargs = {**HT_SMALL, "t_sparse_self_attn": True, "t_sparse_cross_attn": True}
    ref = demucs_htdemucs.HTDemucs(SOURCES, **kwargs)
    ours = HTDemucs(SOURCES, **kwargs, attention="dense")
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.isfinite(ours.eval()(torch.randn(1, 2, SR // 3))).all()


def test_attention_backend_switch_keeps_weights_and_rejects_unknown():
    torch.manual_seed(0)
    model = HTDemucs(SOURCES, **HT_SMALL).eval()
    mix = torch.randn(1, 2, SR // 2)
    with torch.no_grad():
        before = model(mix)
        model.set_attention_backend("dense")
        after = model(mix)
    assert torch.equal(before, after)
    with pytest.raises(StemsepError):
        model.set_attention_backend("no-such-kernel")
    with pytest.raises(StemsepError):
        HTDemucs(SOURCES, **HT_SMALL, attention="no-such-kernel")


def test_unsupported_options_are_one_line_errors():
    with pytest.raises(StemsepError, match="multi_freqs"):
        HDemucs(SOURCES, **H_SMALL, multi_freqs=[0.5])
    with pytest.raises(StemsepError, match="cac"):
        HTDemucs(SOURCES, **HT_SMALL, cac=False)
