"""Robustness augmentations, each measured: MP3 round trip, parametric EQ, LimitAug limiter; each takes the
data's sample rate (``bind``), the old per-augmentation key still read."""

from __future__ import annotations

import math

import pytest
import torch

from stemsep.data.augment import FlipSign, Limiter, Mp3Codec, ParametricEQ, apply_augmentations
from stemsep.data.augment.degrade import limiter_gain
from stemsep.errors import StemsepError

SR = 44100


def _bound(aug, rate: int = SR):
    """``aug`` given the data's sample rate, as the data module and its stream give it."""
    aug.bind(rate)
    return aug


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tones(batch=2, sources=4, seconds=1.0, seed=0) -> torch.Tensor:
    """Stems of sines (different per stem) with a little noise: ``(B, S, 2, T)``."""
    g = _gen(seed)
    t = torch.arange(int(seconds * SR)) / SR
    freqs = 110 * 2 ** (torch.arange(batch * sources * 2).float().view(batch, sources, 2, 1) / 5)
    return 0.2 * torch.sin(2 * math.pi * freqs * t) + 0.01 * torch.randn(batch, sources, 2, len(t), generator=g)


def _level_db(wav: torch.Tensor, freq: float) -> float:
    """Level (dB) of the ``freq`` component of ``wav (T,)`` (Hann window, exact bin)."""
    n = wav.shape[-1]
    spectrum = torch.fft.rfft(wav.double() * torch.hann_window(n, dtype=torch.float64))
    return 20 * math.log10(spectrum[round(freq * n / SR)].abs().item())


@pytest.mark.parametrize("compression", [0.5, 0.95])  # ~160 kbps, and a low rate where LAME adds delay
def test_mp3_codec_changes_the_mix_but_keeps_length_rate_and_alignment(compression):
    stems = _tones()
    aug = _bound(Mp3Codec(proba=1.0, min_compression=compression, max_compression=compression))
    mix, out = apply_augmentations([FlipSign(), aug], stems, _gen(), stems.shape[-1])
    clean = out.sum(1)
    assert mix.shape == clean.shape and mix.dtype == clean.dtype
    assert torch.equal(out, FlipSign()(stems, _gen()))  # stems untouched by the codec
    error = (mix - clean).pow(2).mean() / clean.pow(2).mean()
    assert 1e-6 < error < 0.2  # changed by the codec, yet the same, aligned signal
    # Aligned: shifting by one sample either way only makes the match worse.
    body = slice(2000, -2000)
    for lag in (-1, 1):
        assert (mix[..., body] - clean.roll(lag, -1)[..., body]).pow(2).mean() > (mix - clean)[..., body].pow(2).mean()
    # Sample rate kept: a tone stays at its frequency (peak bin of the decoded spectrum).
    tone = 0.5 * torch.sin(2 * math.pi * 1000 * torch.arange(SR) / SR).expand(1, 1, 2, SR).clone()
    coded, _ = apply_augmentations([aug], tone, _gen(), SR)
    assert torch.fft.rfft(coded[0, 0]).abs().argmax().item() == 1000  # 1 Hz bins


@pytest.mark.parametrize("gain_db", [6.0, -9.0])
def test_parametric_eq_gain_at_centre_and_mixture_stays_sum(gain_db):
    centre = 1000.0
    t = torch.arange(SR) / SR
    probe = torch.sin(2 * math.pi * centre * t) + torch.sin(2 * math.pi * 100 * t)
    stems = torch.stack([probe, 0.5 * probe.roll(777)]).expand(1, 2, 2, SR).clone() * 0.1
    stems += 0.01 * torch.randn(stems.shape, generator=_gen())
    eq = _bound(ParametricEQ(proba=1.0, bands=1, min_freq=centre, max_freq=centre, min_gain_db=gain_db,
                             max_gain_db=gain_db, min_q=1.0, max_q=1.0))
    mix, out = apply_augmentations([eq], stems, _gen(), SR)
    steady = slice(SR // 4, SR // 4 + SR // 2)  # past the filter's transient, whole periods
    for s in range(2):
        measured = _level_db(out[0, s, 0, steady], centre) - _level_db(stems[0, s, 0, steady], centre)
        assert measured == pytest.approx(gain_db, abs=0.1)
        far = _level_db(out[0, s, 0, steady], 100) - _level_db(stems[0, s, 0, steady], 100)
        assert abs(far) < 0.5 * abs(gain_db)  # a band, not a broadband gain
    assert torch.allclose(mix, out.sum(1), atol=1e-6)
    # Every stem got the same filter: equalising the original mixture gives the same mixture.
    whole, _ = apply_augmentations([eq], stems.sum(1, keepdim=True), _gen(), SR)
    assert torch.allclose(whole[:, None].sum(1), mix, atol=1e-5)


@pytest.mark.parametrize("targets", ["linear", "limited"])
def test_limiter_bounds_the_peak_and_keeps_the_documented_relation(targets):
    stems = _tones(seed=1)
    stems[:, 0, :, SR // 2: SR // 2 + 300] += 0.8  # a transient to limit
    threshold = 0.9
    aug = _bound(Limiter(proba=1.0, threshold=threshold, min_drive_db=6.0, max_drive_db=6.0, targets=targets))
    mix, out = apply_augmentations([aug], stems, _gen(), stems.shape[-1])
    original = stems.sum(1)
    assert mix.abs().max() <= threshold + 1e-6
    for b in range(mix.shape[0]):
        k = threshold * 10 ** (6 / 20) / original[b].abs().max()
        gain = limiter_gain(original[b] * k, threshold, round(0.005 * SR), round(0.05 * SR))
        assert torch.allclose(mix[b], k * gain * original[b], atol=1e-5)
        assert gain.min() < 10 ** (-5 / 20) and gain.max() > 0.99  # really limits, not a plain gain
        expected = k * gain * stems[b] if targets == "limited" else k * stems[b]
        assert torch.allclose(out[b], expected, atol=1e-5)
    if targets == "linear":  # LimitAug: targets sum to the unlimited mix; mix = g(t) * sum(targets)
        assert not torch.allclose(mix, out.sum(1), atol=1e-3)
    else:
        assert torch.allclose(mix, out.sum(1), atol=1e-5)


def test_limiter_gain_is_smooth_and_bounded():
    wav = torch.zeros(2, 4000)
    wav[0, 2000] = 2.0
    gain = limiter_gain(wav, 1.0, lookahead=100, hold=200)
    assert (wav * gain).abs().max() <= 1.0 and gain[2000] == pytest.approx(0.5)
    assert gain[1899] == 1 and gain[1950] == pytest.approx(0.75, abs=0.01)  # linear attack ramp
    assert gain[2200] == pytest.approx(0.5) and gain[2250] == pytest.approx(0.75, abs=0.01)  # hold, release
    assert gain[2300] == 1


def test_mixture_augmentations_must_come_last():
    with pytest.raises(StemsepError, match="must come after"):
        apply_augmentations([Limiter(proba=1.0), FlipSign()], _tones(), _gen(), SR)


@pytest.mark.parametrize("cls", [ParametricEQ, Limiter, Mp3Codec])
def test_the_rate_is_the_datas_and_the_old_key_is_checked_against_it(cls):
    name = cls.__name__
    unbound = cls(proba=1.0)
    stems = _tones(batch=1, sources=2, seconds=0.1)
    with pytest.raises(StemsepError) as err:
        apply_augmentations([unbound], stems, _gen(), stems.shape[-1])
    assert str(err.value) == (f"{name}: the data's sample rate is unknown: call bind(samplerate) first "
                              "(StemDataModule and its training stream do)")
    assert _bound(cls(proba=1.0), 32000).samplerate == 32000
    # the old key, equal to the data's rate: one note, once, and the same output as without it
    old = cls(proba=1.0, samplerate=SR)
    with pytest.warns(FutureWarning) as notes:
        old.bind(SR)
        old.bind(SR)
    assert [str(n.message) for n in notes] == [f"{name}: init_args.samplerate 44100 is no longer needed "
                                               "(augmentations take the data's sample rate): drop the key"]
    new = _bound(cls(proba=1.0))
    a = apply_augmentations([old], stems, _gen(3), stems.shape[-1])
    b = apply_augmentations([new], stems, _gen(3), stems.shape[-1])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # different from the data's rate: one line
    with pytest.raises(StemsepError) as err:
        cls(proba=1.0, samplerate=48000).bind(SR)
    assert str(err.value) == (f"{name}: init_args.samplerate 48000 differs from the data's sample rate 44100 Hz: "
                              "drop the key (every augmentation takes the data's rate)")


def test_eq_band_above_nyquist_is_said_when_the_rate_is_known():
    eq = ParametricEQ(max_freq=12000.0)  # fine at 44.1 kHz
    with pytest.raises(StemsepError, match=r"^ParametricEQ: need max_freq < samplerate / 2, got 12000.0 at 16000 Hz$"):
        eq.bind(16000)
