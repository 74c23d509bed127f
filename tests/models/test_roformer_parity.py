"""Parity of our BSRoFormer / MelBandRoFormer with the ``bs-roformer`` package (0.5.x; a dev-only oracle).

The reference is built with random weights (perturbed away from the init, norms and rotary
frequencies included, so a swapped parameter shows), its ``state_dict`` loads into ours with
``strict=True`` and the outputs agree to 1e-4 in float32 on inputs whose length is not a multiple
of the hop. bs-roformer 0.5.1 differs from MSST's copy (our defaults) in three documented places,
set explicitly here: BS-RoFormer's learned value residual (``value_residual=True``), no DC
zeroing (``zero_dc=False``) and Mel-Band RoFormer's ``linear_transformer_depth`` default (1).
The reference's inverse STFT drops the samples after the last full hop; ours returns the input's
length, so the reference's length is compared.
"""

from __future__ import annotations

import contextlib
import functools
import re

import pytest
import torch
import yaml

from helpers import REPO
from stemsep.contract import network_config
from stemsep.errors import StemsepError
from stemsep.io.checkpoint import build_from_config
from stemsep.models import BSRoFormer, MelBandRoFormer
from stemsep.models.roformer.bands import mel_band_layout

ref_bs = pytest.importorskip("bs_roformer.bs_roformer")
ref_mel = pytest.importorskip("bs_roformer.mel_band_roformer")

SR = 44100
TOL = 1e-4
OURS_ONLY = ("sources", "segment", "samplerate", "checkpoint_blocks", "value_residual", "zero_dc",
             "mlp_expansion_factor")
FAMILIES = {"bs": (BSRoFormer, ref_bs, "BSRoformer"), "mel": (MelBandRoFormer, ref_mel, "MelBandRoformer")}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _expansion(module, factor: int):
    """bs-roformer 0.5.1 has no ``mlp_expansion_factor`` keyword (MSST added it): build its mask
    estimators with the factor by wrapping the module's class for the construction."""
    original = module.MaskEstimator
    module.MaskEstimator = functools.partial(original, mlp_expansion_factor=factor)
    try:
        yield
    finally:
        module.MaskEstimator = original


def pair(family: str, seed: int = 0, **kwargs):
    """(reference, ours) with the reference's weights (perturbed) loaded strictly into ours."""
    ours_cls, module, ref_name = FAMILIES[family]
    kwargs = dict(kwargs)
    if family == "mel":
        kwargs.setdefault("linear_transformer_depth", 1)  # the reference's default, not MSST's
    ref_kwargs = {k: v for k, v in kwargs.items() if k not in OURS_ONLY}
    if "sources" in kwargs:
        ref_kwargs["num_stems"] = len(kwargs["sources"])
    if "freqs_per_bands" in ref_kwargs:
        ref_kwargs["freqs_per_bands"] = tuple(ref_kwargs["freqs_per_bands"])
    torch.manual_seed(seed)
    with _expansion(module, kwargs.get("mlp_expansion_factor", 4)):
        ref = getattr(module, ref_name)(**ref_kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(1 + 0.1 * torch.randn_like(p)).add_(0.01 * torch.randn_like(p))
    ours = ours_cls(**kwargs, zero_dc=False, **({"value_residual": True} if family == "bs" else {}))
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert _count(ours) == _count(ref)
    return ref.eval(), ours.eval()


def assert_same_output(ref, ours, length: int, batch: int = 2, seed: int = 1) -> None:
    mix = 0.5 * torch.randn(batch, ours.audio_channels, length, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        theirs, mine = ref(mix), ours(mix)
    if theirs.dim() == 3:  # the reference drops the stem axis for one stem
        theirs = theirs[:, None]
    assert mine.shape == (batch, len(ours.sources), ours.audio_channels, length)
    assert theirs.abs().max() > 1e-3
    assert (mine[..., :theirs.shape[-1]] - theirs).abs().max() < TOL


def small_config(name: str, **overrides) -> dict:
    config = yaml.safe_load((REPO / "configs" / "model" / f"{name}.yaml").read_text())["init_args"]
    return {**config, **overrides}


@pytest.mark.parametrize("stereo", [True, False], ids=["stereo", "mono"])
@pytest.mark.parametrize("family, name", [("bs", "bs_roformer_small"), ("mel", "mel_band_roformer_small")])
def test_small_configs_match_the_reference(family, name, stereo):
    config = small_config(name, stereo=stereo)
    if family == "mel":
        config["linear_transformer_depth"] = 0  # the small config's: renumbered reference keys load too
    ref, ours = pair(family, **config)
    assert_same_output(ref, ours, SR // 4 + 37)


@pytest.mark.parametrize("stereo", [True, False], ids=["stereo", "mono"])
@pytest.mark.parametrize("family", ["bs", "mel"])
def test_reference_defaults_match(family, stereo):
    """Every constructor default of the reference (62 bands / 60 mel bands of a 2048-point STFT,
    8 heads of 64, two layers per axial transformer), at width 32 and depth 2; one stem."""
    ref, ours = pair(family, dim=32, depth=2, stereo=stereo, attn_dropout=0.0, ff_dropout=0.0)
    assert ours.sources == ["vocals"]
    assert_same_output(ref, ours, 2048 * 3 + 101, batch=1)


def test_msst_options_match_with_their_weights():
    """Options MSST added (linear transformers, skip connections, a smaller mask MLP) on a
    4-stem model: the weights they add are where the reference's layout puts them."""
    sources = ["drums", "bass", "other", "vocals"]
    ref, ours = pair("mel", dim=32, depth=2, stereo=True, sources=sources, linear_transformer_depth=1, num_bands=24,
                     mlp_expansion_factor=2, time_transformer_depth=1, freq_transformer_depth=1, attn_dropout=0.0,
                     ff_dropout=0.0, mask_estimator_depth=2)
    assert_same_output(ref, ours, SR // 8 + 5)
    bs = BSRoFormer(32, depth=3, stereo=True, sources=sources, skip_connection=True, linear_transformer_depth=1)
    keys = set(bs.state_dict())
    assert "layers.0.0.layers.0.0.temperature" in keys and "layers.2.2.layers.0.0.to_qkv.weight" in keys
    assert bs(torch.randn(1, 2, 4096)).shape == (1, 4, 2, 4096)


@pytest.mark.slow
@pytest.mark.parametrize("family, name", [("bs", "bs_roformer"), ("mel", "mel_band_roformer")])
def test_full_size_configs_match_the_reference(family, name):
    """configs/model/bs_roformer.yaml (222 M parameters) and mel_band_roformer.yaml (228 M)."""
    ref, ours = pair(family, **small_config(name))
    assert_same_output(ref, ours, 441 * 20 + 3, batch=1)


@pytest.mark.parametrize("name", ["bs_roformer_small", "mel_band_roformer_small", "bs_roformer",
                                  "mel_band_roformer"])
def test_configs_state_their_parameter_count(name):
    text = (REPO / "configs" / "model" / f"{name}.yaml").read_text()
    stated = int(re.search(r"^#.*?([\d,]+) parameters", text, re.MULTILINE).group(1).replace(",", ""))
    net = build_from_config(yaml.safe_load(text))
    assert _count(net) == stated


@pytest.mark.parametrize("sr, n_fft, bands", [(44100, 2048, 60), (44100, 1024, 32), (48000, 4096, 128),
                                               (16000, 512, 24)])
def test_mel_bands_are_librosas_filter_support(sr, n_fft, bands):
    librosa = pytest.importorskip("librosa")
    expected = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=bands)) > 0
    expected[0, 0] = expected[-1, -1] = True
    assert torch.equal(mel_band_layout(sr, n_fft, bands), expected)


def test_contract_and_rebuild_from_recorded_arguments():
    net = MelBandRoFormer(16, depth=1, sources=["vocals", "other"], stereo=True, num_bands=8, stft_n_fft=512,
                          stft_hop_length=128, stft_win_length=512, segment=1.5)
    assert (net.sources, net.samplerate, net.audio_channels, net.segment, net.num_stems) == (
        ["vocals", "other"], 44100, 2, 1.5, 2)
    rebuilt = build_from_config(network_config(net))
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        assert torch.equal(net.eval()(mix), rebuilt.eval()(mix))
    tiny = net(torch.randn(1, 2, 100))  # shorter than the STFT's padding: padded, cut back
    assert tiny.shape == (1, 2, 2, 100)


@pytest.mark.parametrize("kwargs, message", [
    (dict(use_pope=True), "use_pope"),
    (dict(stft_window_fn=torch.hamming_window), "stft_window_fn"),
    (dict(freqs_per_bands=(2, 3)), "freqs_per_bands"),
    (dict(sources=["a", "b"], num_stems=3), "num_stems 3 disagrees"),
    (dict(num_stems=3), "num_stems 3 needs sources"),
])
def test_unsupported_options_are_one_line_errors(kwargs, message):
    with pytest.raises(StemsepError) as err:
        BSRoFormer(16, depth=1, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_wrong_channel_count_is_one_line_error():
    with pytest.raises(StemsepError, match=r"expected a mixture \(batch, 1, time\)"):
        BSRoFormer(16, depth=1)(torch.randn(1, 2, 4096))


@pytest.mark.parametrize("family", ["bs", "mel"])
def test_block_checkpointing_gives_the_same_gradients(family):
    cls = FAMILIES[family][0]
    kwargs = dict(dim=16, depth=2, stereo=True, time_transformer_depth=1, freq_transformer_depth=1, dim_head=8,
                  heads=2, stft_n_fft=512, stft_hop_length=128, stft_win_length=512,
                  **({"freqs_per_bands": (8,) * 16 + (129,), "value_residual": True} if family == "bs"
                     else {"num_bands": 8, "attn_dropout": 0.0, "ff_dropout": 0.0, "linear_transformer_depth": 1}))
    torch.manual_seed(0)
    plain = cls(**kwargs)
    checkpointed = cls(**kwargs, checkpoint_blocks=True)
    checkpointed.load_state_dict(plain.state_dict())
    mix = torch.randn(2, 2, 5000)
    grads = []
    for net in (plain, checkpointed):
        net.train()
        net(mix).square().mean().backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("family", ["bs", "mel"])
def test_bf16_autocast_trains(family):
    cls = FAMILIES[family][0]
    extra = ({"freqs_per_bands": (8,) * 16 + (129,)} if family == "bs"
             else {"num_bands": 8, "attn_dropout": 0.0, "ff_dropout": 0.0})
    torch.manual_seed(0)
    net = cls(16, depth=1, stereo=True, dim_head=8, heads=2, stft_n_fft=512, stft_hop_length=128,
              stft_win_length=512, checkpoint_blocks=True, **extra).train()
    mix = torch.randn(2, 2, 4000)
    with torch.no_grad():
        full = net(mix)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(mix)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.abs().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert (out - full).abs().max() < 0.1 * full.abs().max()  # bf16 rounding, not another network
