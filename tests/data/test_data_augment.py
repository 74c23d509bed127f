"""Augmentations: mixture consistency, seeding, measured pitch/tempo of Repitch, and Shift in seconds at the
data's sample rate (the old key in samples still read, with a note)."""

from __future__ import annotations

import math

import pytest
import torch

from stemsep.data.augment import (
    FlipChannels,
    FlipSign,
    Remix,
    Repitch,
    Scale,
    Shift,
    apply_augmentations,
    needed_length,
    repitch,
)
from stemsep.data.augment.stembatch import StemBatch
from stemsep.data.augment.wsola import wsola
from stemsep.errors import StemsepError

SR = 44100


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _shift(samples: int, same: bool = False, rate: int = SR) -> Shift:
    """A Shift of up to ``samples`` at ``rate``, stated in seconds and bound as a data module binds it."""
    aug = Shift(seconds=samples / rate, same=same)
    aug.bind(rate)
    return aug


def _peak_hz(wav: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wav * torch.hann_window(len(wav)), n=8 * len(wav)).abs()
    return spectrum.argmax().item() * SR / (8 * len(wav))


def test_remix_permutes_sources_within_groups_and_keeps_mix():
    stems = torch.randn(8, 4, 2, 100)
    out = Remix(group_size=4)(stems, _gen())
    for b in range(8):
        for s in range(4):
            group = range(b // 4 * 4, b // 4 * 4 + 4)
            assert any(torch.equal(out[b, s], stems[g, s]) for g in group)
    assert not torch.equal(out, stems)
    mix, aug = apply_augmentations([Remix(group_size=4)], stems, _gen(), 100)
    assert torch.equal(mix, aug.sum(1))


def test_simple_augmentations_and_seeding():
    stems = torch.randn(4, 4, 2, 1000)
    signs = FlipSign()(stems, _gen())
    assert all(torch.equal(signs[b, s], stems[b, s]) or torch.equal(signs[b, s], -stems[b, s])
               for b in range(4) for s in range(4))
    flips = FlipChannels()(stems, _gen())
    assert all(torch.equal(flips[b, s], stems[b, s]) or torch.equal(flips[b, s], stems[b, s].flip(0))
               for b in range(4) for s in range(4))
    gains = Scale(min=0.5, max=0.6)(stems, _gen()) / stems
    assert gains.min() > 0.49 and gains.max() < 0.61
    shifted = _shift(100)(stems, _gen())
    assert shifted.shape[-1] == 900 and torch.equal(_shift(100)(stems, _gen(3)), _shift(100)(stems, _gen(3)))
    augs = [Repitch(proba=1.0), _shift(100), FlipSign(), Remix()]
    length = needed_length(augs, 1000)
    assert length >= 1100 * 1.12
    a = apply_augmentations(augs, torch.randn(4, 4, 2, length, generator=_gen(1)), _gen(5), 1000)
    b = apply_augmentations(augs, torch.randn(4, 4, 2, length, generator=_gen(1)), _gen(5), 1000)
    assert a[1].shape == (4, 4, 2, 1000) and torch.equal(a[1], b[1]) and torch.equal(a[0], a[1].sum(1))


@pytest.mark.parametrize("method", ["wsola", pytest.param("vocoder", marks=pytest.mark.slow)])
@pytest.mark.parametrize("semitones", [-2, -1, 1, 2])
def test_repitch_moves_a_sine_by_the_asked_interval(semitones, method):
    t = torch.arange(3 * SR) / SR
    sine = torch.sin(2 * math.pi * 440 * t)[None]
    out = repitch(sine, semitones, 1.0, method=method)
    assert abs(out.shape[-1] - sine.shape[-1]) <= 2
    measured = _peak_hz(out[0, SR // 2: SR // 2 + 2 * SR])
    assert measured == pytest.approx(440 * 2 ** (semitones / 12), rel=2e-3)  # < 4 cents


def _onsets(wav: torch.Tensor, period: float) -> torch.Tensor:
    positions = []
    for k in range(1, int(len(wav) / period) - 1):
        lo, hi = int((k - 0.3) * period), int((k + 0.3) * period)
        positions.append(lo + wav[lo:hi].abs().argmax().item())
    return torch.tensor(positions, dtype=torch.float64)


@pytest.mark.parametrize("method", ["wsola", pytest.param("vocoder", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("semitones", "tempo"), [(0, 1.12), (2, 0.88), (-2, 1.06)])
def test_repitch_changes_tempo_by_the_asked_ratio(semitones, tempo, method):
    clicks = torch.zeros(1, 6 * SR)
    clicks[0, ::SR // 2] = 1.0  # 120 bpm click train
    out = repitch(clicks, semitones, tempo, method=method)[0]
    assert out.shape[-1] == pytest.approx(clicks.shape[-1] / tempo, rel=2e-3)
    onsets = _onsets(out, SR / 2 / tempo)
    slope = torch.linalg.lstsq(torch.stack([torch.arange(len(onsets), dtype=torch.float64),
                                            torch.ones(len(onsets), dtype=torch.float64)], 1),
                               onsets[:, None]).solution[0, 0].item()
    assert (SR / 2) / slope == pytest.approx(tempo, rel=5e-3)


def test_repitch_probability():
    stems = torch.randn(6, 2, 2, 5000, generator=_gen(2))
    out = Repitch(proba=0.0)(stems, _gen())
    assert torch.equal(out, stems[..., : out.shape[-1]])
    changed = Repitch(proba=1.0, tempo_std=0.0)(stems, _gen())
    assert sum(not torch.allclose(changed[b], stems[b, ..., : changed.shape[-1]]) for b in range(6)) >= 4


def test_lazy_batch_applies_each_recorded_edit_exactly():
    """Every output stem is (gain in +-[0.5, 0.6]) x (a stem of the same source in its remix group,
    maybe channel-swapped, read from an offset <= shift): search for it among all candidates."""
    stems = torch.randn(4, 3, 2, 300, generator=_gen(7))
    rows = [[s.T.contiguous().T for s in example] for example in stems]  # non-contiguous views
    augs = [_shift(20), FlipChannels(), FlipSign(), Scale(min=0.5, max=0.6), Remix(group_size=2)]
    mix, out = apply_augmentations(augs, StemBatch.from_rows(rows), _gen(3), 280)
    assert out.shape == (4, 3, 2, 280) and torch.equal(mix, out.sum(1))
    flipped = swapped = 0
    for b in range(4):
        for s in range(3):
            found = []
            for g in range(b // 2 * 2, b // 2 * 2 + 2):
                for offset in range(21):
                    for flip in (False, True):
                        cand = stems[g, s, :, offset: offset + 280]
                        cand = cand.flip(0) if flip else cand
                        gain = out[b, s, 0, 0] / cand[0, 0]
                        if 0.5 <= abs(gain) <= 0.6 and torch.allclose(out[b, s], gain * cand, atol=1e-6):
                            found.append((g, flip))
            assert len(found) == 1, (b, s, found)
            flipped += found[0][1]
            swapped += found[0][0] != b
    assert 0 < flipped < 12 and swapped > 0
    assert torch.equal(apply_augmentations(augs, stems, _gen(3), 280)[1], out)  # tensor input: same result


def test_plain_callables_still_work_as_augmentations():
    stems = torch.randn(2, 2, 2, 50)
    mix, out = apply_augmentations([FlipSign(), lambda x, g: x * 2, _shift(10)], stems, _gen(), 40)
    assert out.shape == (2, 2, 2, 40) and torch.equal(mix, out.sum(1))
    ratio = out / stems[..., : 40]
    assert ratio.abs().max() > 0  # scaled, not zeroed


def test_wsola_cuts_all_rows_at_the_same_places():
    t = torch.arange(2 * SR) / SR
    row = torch.sin(2 * math.pi * 330 * t) + 0.3 * torch.sin(2 * math.pi * 1250 * t)
    wav = torch.stack([row, -0.5 * row, torch.zeros_like(row)])
    out = wsola(wav, 1.1)
    assert out.shape == (3, round(2 * SR / 1.1))
    assert torch.allclose(out[1], -0.5 * out[0], atol=1e-5) and out[2].abs().max() == 0


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_shift_counts_seconds_at_the_datas_rate(rate):
    aug = Shift(seconds=0.25)
    aug.bind(rate)
    assert aug.shift == rate // 4 and aug.input_length(1000) == 1000 + rate // 4
    stems = torch.randn(2, 3, 2, rate // 2, generator=_gen(1))
    assert aug(stems, _gen()).shape[-1] == rate // 2 - rate // 4
    assert Shift().seconds == 1.0  # demucs' 1 s by default


def test_shift_in_seconds_needs_the_rate():
    with pytest.raises(StemsepError) as err:
        needed_length([Shift(seconds=0.5)], 1000)
    assert str(err.value) == ("Shift: the data's sample rate is unknown: call bind(samplerate) first "
                              "(StemDataModule and its training stream do)")


def test_old_shift_in_samples_is_read_as_before_with_a_note():
    stems = torch.randn(3, 4, 2, 20000, generator=_gen(2))
    old = Shift(shift=8820, same=False)
    assert old.shift == 8820  # no rate needed: samples, as before
    with pytest.warns(FutureWarning) as notes:
        old.bind(SR)
    assert [str(n.message) for n in notes] == [
        "Shift: init_args.shift 8820 counts samples (the old key): write seconds: 0.2 instead (8820 samples at 44100 Hz)"]
    new = Shift(seconds=0.2)
    new.bind(SR)
    assert torch.equal(old(stems, _gen(4)), new(stems, _gen(4)))  # the same crop, the same offsets
    assert Shift(8820).shift == 8820  # positional, as Python callers wrote it
    with pytest.raises(StemsepError, match=r"^Shift: give seconds \(0.2\) or the old shift in samples \(8820\), not both$"):
        Shift(shift=8820, seconds=0.2)
