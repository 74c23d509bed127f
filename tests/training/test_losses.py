"""The RoFormer loss (``stemsep.training.losses.MultiResolutionL1Loss``) equals the reference's.

Oracle: the ``bs-roformer`` package (0.5.x), whose ``forward(mix, target)`` returns L1 plus the
multi-resolution STFT L1 of its own output. We compute its output without a target, apply our loss
per source as ``SeparationModule`` does, and compare.
"""

from __future__ import annotations

import pytest
import torch

from helpers import TinyNet
from stemsep.errors import BadArgumentError
from stemsep.training.losses import MultiResolutionL1Loss
from stemsep.training.module import SeparationModule

bs_roformer = pytest.importorskip("bs_roformer")


def oracle(num_stems: int, stereo: bool = True, **kwargs):
    torch.manual_seed(0)
    return bs_roformer.BSRoformer(dim=16, depth=1, stereo=stereo, num_stems=num_stems, time_transformer_depth=1,
                                  freq_transformer_depth=1, dim_head=8, heads=2, flash_attn=False, **kwargs).eval()


@pytest.mark.parametrize("num_stems,stereo", [(2, True), (1, False)])
def test_equals_the_reference_loss(num_stems, stereo):
    model = oracle(num_stems, stereo)
    channels = 2 if stereo else 1
    mix = torch.randn(2, channels, 22050)
    with torch.no_grad():
        estimate = model(mix)
        target = torch.randn_like(estimate)
        expected = model(mix, target)
    if num_stems == 1:  # the reference drops the stem axis of a one-stem model
        estimate, target = estimate[:, None], target[:, None]
    loss = MultiResolutionL1Loss()
    # as SeparationModule averages it: one call per source, equal weights
    ours = torch.stack([loss(estimate[:, i], target[:, i]) for i in range(num_stems)]).mean()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_parameters_follow_the_reference():
    model = oracle(1, multi_stft_resolution_loss_weight=0.5, multi_stft_resolutions_window_sizes=(1024, 256),
                   multi_stft_hop_size=100, stft_n_fft=2048)
    mix = torch.randn(1, 2, 20000)
    with torch.no_grad():
        estimate = model(mix)
        target = torch.randn_like(estimate)
        expected = model(mix, target)
    ours = MultiResolutionL1Loss(window_sizes=(1024, 256), hop_length=100, weight=0.5)(estimate, target)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    default = MultiResolutionL1Loss()(estimate, target)
    assert not torch.isclose(default, expected)  # the options matter


def test_terms_and_gradient():
    loss = MultiResolutionL1Loss()
    x = torch.randn(2, 2, 8000, requires_grad=True)
    assert loss(x, x.detach()).item() == 0.0
    y = torch.randn(2, 2, 8000)
    value = loss(x, y)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # the spectral part adds to the waveform L1
    assert value.item() > (x - y).abs().mean().item()
    no_stft = MultiResolutionL1Loss(weight=0.0)(x, y)
    torch.testing.assert_close(no_stft, (x - y).abs().mean())


def test_bf16_inputs_are_computed_in_float32():
    x, y = torch.randn(1, 2, 4000), torch.randn(1, 2, 4000)
    loss = MultiResolutionL1Loss()
    value = loss(x.bfloat16(), y.bfloat16())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(x.bfloat16().float(), y.bfloat16().float()))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(BadArgumentError, match="window_sizes"):
        MultiResolutionL1Loss(window_sizes=[])
    with pytest.raises(BadArgumentError, match="hop_length"):
        MultiResolutionL1Loss(hop_length=0)
    with pytest.raises(BadArgumentError, match="differ in shape"):
        MultiResolutionL1Loss()(torch.zeros(1, 2, 100), torch.zeros(1, 2, 99))


def test_is_a_separation_module_loss():
    module = SeparationModule(TinyNet(), loss=MultiResolutionL1Loss())
    mix, stems = torch.randn(2, 2, 4000), torch.randn(2, 4, 2, 4000)
    loss = module.training_step((mix, stems), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert not any(k.startswith("loss.") for k in module.state_dict())  # windows are not saved
