"""Ensembles of networks of different families, rates and channel counts (`Ensemble`), and TTA.

Members: a one-stem vocal Mel-Band RoFormer (44.1 kHz), a four-stem HT Demucs at 32 kHz and a
four-stem SCNet, all tiny with random weights. Every expectation is built from the members run on
their own through `apply_model` (resampled by hand where their rate differs), so the tests check
the matching by name, the resampling, the weights, `pick`, derived stems and the modes.
"""

from __future__ import annotations

import pytest
import torch

from helpers import TinyNet
from helpers.tools import small_network
from stemsep.errors import BadArgumentError
from stemsep.inference.chunked import apply_model
from stemsep.inference.ensemble import Ensemble, combine, with_tta
from stemsep.io.audio import resample

SR = 44100
ROFORMER = {"dim": 8, "depth": 1, "dim_head": 8, "heads": 2, "stft_n_fft": 512, "stft_hop_length": 128,
            "stft_win_length": 512, "mlp_expansion_factor": 1, "segment": 0.5, "num_bands": 8,
            "sources": ["vocals"]}
SCNET = {"dims": [4, 8, 8, 8], "nfft": 512, "hop_size": 128, "win_size": 512, "conv_depths": [1, 1, 1],
         "num_dplayer": 2, "segment": 0.5}


@pytest.fixture(scope="module")
def members():
    vocal, _ = small_network("mel_band_roformer_small", seed=1, **ROFORMER)
    demucs, _ = small_network("htdemucs_small", seed=2, depth=2, channels=8, t_layers=1, segment=0.5,
                              samplerate=32000)
    scnet, _ = small_network("scnet_small", seed=3, **SCNET)
    return vocal, demucs, scnet


@pytest.fixture(scope="module")
def mix():
    torch.manual_seed(0)
    t = torch.arange(int(0.8 * SR)) / SR
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.1 * torch.sin(2 * torch.pi * 1330 * t)
    return torch.stack([tone, 0.7 * tone])[None] + 0.01 * torch.randn(1, 2, t.numel())


def alone(net, mix):
    """The member's stems of ``mix`` at 44.1 kHz, as the ensemble must compute them."""
    x = resample(mix, SR, net.samplerate)
    out = resample(apply_model(net, x, overlap=0.25), net.samplerate, SR)
    return torch.nn.functional.pad(out[..., :mix.shape[-1]], (0, max(0, mix.shape[-1] - out.shape[-1])))


def test_stems_by_name_resampled_and_weighted(members, mix):
    vocal, demucs, scnet = members
    ensemble = Ensemble([vocal, demucs, scnet], mode="avg_wave", weights=[1, 2, 1], derived=["instrumental"]).eval()
    assert ensemble.sources == ["vocals", "drums", "bass", "other", "instrumental"]
    assert ensemble.samplerate == SR and ensemble.audio_channels == 2
    with torch.no_grad():
        out = ensemble(mix)
    v, d, s = alone(vocal, mix), alone(demucs, mix), alone(scnet, mix)
    vocals = (v[:, 0] + 2 * d[:, 3] + s[:, 3]) / 4
    drums = (2 * d[:, 0] + s[:, 0]) / 3
    torch.testing.assert_close(out[:, 0], vocals, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], drums, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 4], mix - vocals, atol=1e-5, rtol=0)
    assert (d[:, 3] - s[:, 3]).abs().max() > 1e-3  # the members differ: the weights matter


def test_pick_and_modes(members, mix):
    vocal, demucs, scnet = members
    picked = Ensemble([vocal, demucs, scnet], mode="median_wave", pick={"vocals": [0], "drums": [1, 2]}).eval()
    with torch.no_grad():
        out = picked(mix)
    v, d, s = alone(vocal, mix), alone(demucs, mix), alone(scnet, mix)
    torch.testing.assert_close(out[:, 0], v[:, 0], atol=1e-5, rtol=0)  # vocals from the RoFormer alone
    expected = combine(torch.stack([d[0, 0], s[0, 0]]), "median_wave")
    torch.testing.assert_close(out[0, 1], expected, atol=1e-5, rtol=0)
    fft = Ensemble([demucs, scnet], mode="max_fft").eval()
    with torch.no_grad():
        got = fft(mix)
    torch.testing.assert_close(got[0, 2], combine(torch.stack([d[0, 2], s[0, 2]]), "max_fft"), atol=1e-5, rtol=0)


def test_mono_member_separates_each_channel(mix):
    torch.manual_seed(4)
    mono = TinyNet(sources=["vocals", "rest"], audio_channels=1, samplerate=SR).eval()
    ensemble = Ensemble([mono]).eval()
    with torch.no_grad():
        out = ensemble(mix)
        left, right = mono(mix[:, :1]), mono(mix[:, 1:])
    assert out.shape == (1, 2, 2, mix.shape[-1])
    torch.testing.assert_close(out[:, :, 0], left[:, :, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, :, 1], right[:, :, 0], atol=1e-6, rtol=0)


def test_tta_is_the_mean_of_three_passes(members, mix):
    _, _, scnet = members
    with torch.no_grad():
        tta = apply_model(with_tta(scnet), mix, overlap=0.25)
        plain = apply_model(scnet, mix, overlap=0.25)
        swapped = apply_model(scnet, mix.flip(1), overlap=0.25).flip(2)
        inverted = -apply_model(scnet, -mix, overlap=0.25)
    torch.testing.assert_close(tta, (plain + swapped + inverted) / 3, atol=1e-6, rtol=0)
    assert (tta - plain).abs().max() > 1e-4  # the passes differ


@pytest.mark.parametrize("kwargs,needle", [
    ({"pick": {"piano": [0]}}, "no member produces 'piano'"),
    ({"pick": {"drums": [0]}}, "do not produce it"),
    ({"derived": ["karaoke"]}, "use 'instrumental'"),
    ({"derived": ["no_piano"]}, "needs 'piano'"),
    ({"mode": "median_wave", "weights": [1, 2, 3]}, "--weights apply to avg_wave and avg_fft only"),
    ({"weights": [1, 2]}, "2 value(s) for 3 model(s)"),
])
def test_bad_settings_are_one_line(members, kwargs, needle):
    with pytest.raises(BadArgumentError) as err:
        Ensemble(list(members), **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def checkpoints(members, tmp_path_factory):
    from helpers.tools import small_config
    from stemsep.io.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("ensemble_ckpts")
    vocal, demucs, scnet = members
    configs = [small_config("mel_band_roformer_small", **ROFORMER),
               small_config("htdemucs_small", depth=2, channels=8, t_layers=1, segment=0.5, samplerate=32000),
               small_config("scnet_small", **SCNET)]
    return [save_checkpoint(folder / f"{name}.ckpt", net, config)
            for name, net, config in zip(("vocal", "demucs", "scnet"), members, configs, strict=True)]


def test_separate_ensemble_writes_what_the_python_api_gives(members, checkpoints, mix, tmp_path):
    import soundfile as sf

    from stemsep.cli import main
    from stemsep.inference.separator import Separator
    from stemsep.io.audio import write_audio

    song = write_audio(tmp_path / "song.wav", mix[0], SR, bits=32)
    assert main(["separate", str(song), "--model", str(checkpoints[0]), "--model", str(checkpoints[1]),
                 "--ensemble", "avg_wave", "--weights", "2", "1", "--derive", "instrumental", "--shifts", "0",
                 "--bits", "32", "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out" / "song").iterdir())
    assert written == ["bass.wav", "drums.wav", "instrumental.wav", "other.wav", "vocals.wav"]
    ensemble = Ensemble(list(members[:2]), weights=[2, 1], derived=["instrumental"]).eval()
    expected = Separator(ensemble, device="cpu", shifts=0).separate(mix[0], SR)
    for name in ("vocals", "drums", "instrumental"):
        got, rate = sf.read(tmp_path / "out" / "song" / f"{name}.wav", dtype="float32", always_2d=True)
        assert rate == SR
        torch.testing.assert_close(torch.from_numpy(got.T), expected[name], atol=1e-4, rtol=0)


def test_bag_of_mixed_families_loads_weights_only_and_is_tested(members, checkpoints, shards, tmp_path, capsys):
    from helpers.tools import check_test_command
    from stemsep.cli import main
    from stemsep.io.checkpoint import load_separator

    out = tmp_path / "mixed.ckpt"
    assert main(["bag", "--model", str(checkpoints[2]), "--model", str(checkpoints[0]), "--ensemble", "avg_wave",
                 "--pick", "vocals=0,1", "--weights", "1", "3", "-o", str(out)]) == 0
    payload = torch.load(out, weights_only=True)  # no pickled code: plain tensors and configs
    assert payload["hyper_parameters"]["net"]["class_path"] == "stemsep.inference.ensemble.Ensemble"
    loaded = load_separator(out)
    assert isinstance(loaded, Ensemble) and loaded.sources == ["drums", "bass", "other", "vocals"]
    direct = Ensemble([members[2], members[0]], weights=[1, 3]).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(mix_short := torch.randn(1, 2, 22050) * 0.1), direct(mix_short),
                                   atol=1e-6, rtol=0)
    check_test_command(out, shards, tmp_path, capsys)


def test_separate_ensemble_bad_input_is_one_line(checkpoints, mix, tmp_path, capsys):
    from stemsep.cli import main
    from stemsep.io.audio import write_audio

    song = write_audio(tmp_path / "song.wav", mix[0], SR, bits=32)
    base = ["separate", str(song), "--model", str(checkpoints[0]), "--model", str(checkpoints[1]), "-o",
            str(tmp_path / "out")]
    for extra, needle in [(["--ensemble", "avg_wave", "--weights", "1,1"], "one number per --model"),
                          (["--pick", "vocals=0"], "add --ensemble MODE"),
                          (["--ensemble", "avg_wave", "--pick", "piano=0"], "no member produces 'piano'"),
                          ([], "a bag needs models of the same kind")]:
        assert main(base + extra) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("stemsep: error:") and needle in line, (extra, line)
    assert not (tmp_path / "out" / "song").exists()


def test_separate_tta_writes_the_three_pass_mean(members, checkpoints, mix, tmp_path):
    import soundfile as sf

    from stemsep.cli import main
    from stemsep.inference.separator import Separator
    from stemsep.io.audio import write_audio

    song = write_audio(tmp_path / "song.wav", mix[0], SR, bits=32)
    assert main(["separate", str(song), "--model", str(checkpoints[2]), "--tta", "--shifts", "0", "--bits", "32",
                 "--device", "cpu", "-o", str(tmp_path / "out")]) == 0
    expected = Separator(with_tta(members[2]), device="cpu", shifts=0).separate(mix[0], SR)
    plain = Separator(members[2], device="cpu", shifts=0).separate(mix[0], SR)
    got, _ = sf.read(tmp_path / "out" / "song" / "drums.wav", dtype="float32", always_2d=True)
    torch.testing.assert_close(torch.from_numpy(got.T), expected["drums"], atol=1e-4, rtol=0)
    assert (expected["drums"] - plain["drums"]).abs().max() > 1e-3


def test_more_bad_settings_are_one_line(members, checkpoints, mix, tmp_path):
    from stemsep.inference.bag import make_bag
    from stemsep.inference.separate import separate_files
    from stemsep.io.audio import write_audio

    for kwargs, needle in [({"mode": "bogus"}, "unknown ensemble mode 'bogus'"),
                           ({"derived": ["instrumental", "instrumental"]}, "given twice"),
                           ({"weights": {"vocal": [1, 2, 3]}}, "weights for ['vocal']: no member produces"),
                           ({"weights": [1, 0, 0], "pick": {"drums": [1]}}, "weights of 'drums' (members [1])")]:
        with pytest.raises(BadArgumentError) as err:
            Ensemble(list(members), **kwargs)
        assert needle in str(err.value), (kwargs, str(err.value))
    with pytest.raises(BadArgumentError, match="unknown ensemble mode"):
        make_bag([checkpoints[0], checkpoints[2]], tmp_path / "bad.ckpt", ensemble="bogus")
    assert not (tmp_path / "bad.ckpt").exists()
    with pytest.raises(BadArgumentError, match="add --ensemble MODE"):  # --tta does not swallow them
        separate_files([write_audio(tmp_path / "song.wav", mix[0], SR)], tmp_path / "out", models=[checkpoints[2]],
                       tta=True, derive=["instrumental"])
