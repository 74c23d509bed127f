"""`stemsep separate` writing options (issue 15), rerun provenance, and constant-memory streaming.

Each option checks the files written (names, count, content where defined) against a plain run
of the same tiny model; streaming (window by window) is compared with the whole-file path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import stemsep.inference.windowed as windowed_module
from helpers import TinyNet
from helpers.audio import tone, write_sf
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.errors import StemsepError
from stemsep.inference import Separator
from stemsep.inference.bag import BagOfModels
from stemsep.inference.chunked import Chunking
from stemsep.inference.windowed import separate_mixes
from stemsep.inference.writing import WriteOptions
from stemsep.io.audio import iter_mix, read_audio, read_mix, resample
from stemsep.io.checkpoint import save_checkpoint
from stemsep.io.provenance import read_provenance

SR = 8000  # the model's rate
SOURCES = ["drums", "bass", "other", "vocals"]
SECONDS = 1.5


class SegNet(TinyNet):
    """TinyNet with a training segment (so it is chunked, hence streamed) and 32 samples of context
    each side (``valid_length``), to exercise the windows' margins."""

    def __init__(self, segment: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.segment = segment

    def valid_length(self, length: int) -> int:
        return length + 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    torch.manual_seed(0)
    net = TinyNet(SOURCES, samplerate=SR)
    ckpt = save_checkpoint(root / "tiny.ckpt", net, network_config(net))
    write_sf(root / "in" / "song.wav", tone(SECONDS, SR), SR, "WAV", "FLOAT")
    out = root / "plain"  # every stem, float WAV, nothing rescaled: the reference of the option tests
    assert main(["separate", str(root / "in" / "song.wav"), "--model", str(ckpt), "-o", str(out), "--shifts", "0",
                 "--bits", "32", "--clip-mode", "none"]) == 0
    plain = {s: read_audio(out / "song" / f"{s}.wav")[0] for s in SOURCES}
    return root, ckpt, plain


def _run(setup, out, *options, inputs=None) -> int:
    root, ckpt, _ = setup
    inputs = inputs or [str(root / "in" / "song.wav")]
    return main(["separate", *inputs, "--model", str(ckpt), "-o", str(out), "--shifts", "0", *options])


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _error(capsys, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("stemsep: error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------------------- options
def test_two_stems_writes_source_and_the_sum_of_the_others(setup, tmp_path, capsys):
    _, _, plain = setup
    assert _run(setup, tmp_path, "--two-stems", "vocals", "--bits", "32", "--clip-mode", "none") == 0
    assert _files(tmp_path) == ["song/no_vocals.wav", "song/vocals.wav"]
    vocals, no_vocals = (read_audio(tmp_path / "song" / f"{n}.wav")[0] for n in ("vocals", "no_vocals"))
    assert torch.equal(vocals, plain["vocals"])
    assert torch.allclose(vocals + no_vocals, sum(plain.values()), atol=1e-6)
    assert torch.allclose(no_vocals, plain["drums"] + plain["bass"] + plain["other"], atol=1e-6)
    # any source works; an unknown one lists the model's sources
    assert _run(setup, tmp_path / "d", "--two-stems", "drums") == 0
    assert _files(tmp_path / "d") == ["song/drums.wav", "song/no_drums.wav"]
    err = _error(capsys, _run(setup, tmp_path / "x", "--two-stems", "guitar"))
    assert "guitar" in err and "drums, bass, other, vocals" in err


def test_stems_writes_a_subset(setup, tmp_path, capsys):
    _, _, plain = setup
    assert _run(setup, tmp_path, "--stems", "vocals,drums", "--bits", "32", "--clip-mode", "none") == 0
    assert _files(tmp_path) == ["song/drums.wav", "song/vocals.wav"]
    for source in ("drums", "vocals"):
        assert torch.equal(read_audio(tmp_path / "song" / f"{source}.wav")[0], plain[source])
    err = _error(capsys, _run(setup, tmp_path / "x", "--stems", "drums,piano"))
    assert "piano" in err and "drums, bass, other, vocals" in err
    with pytest.raises(SystemExit):  # argparse: the two are exclusive
        main(["separate", "x.wav", "--model", "m", "-o", "o", "--stems", "drums", "--two-stems", "vocals"])
    capsys.readouterr()


def test_mp3_format_and_bitrate(setup, tmp_path, capsys):
    _, _, plain = setup
    assert _run(setup, tmp_path / "hi", "--format", "mp3", "--mp3-bitrate", "64", "--clip-mode", "none") == 0
    assert _run(setup, tmp_path / "lo", "--format", "mp3", "--mp3-bitrate", "32", "--clip-mode", "none") == 0
    assert _files(tmp_path / "hi") == sorted(f"song/{s}.mp3" for s in SOURCES)
    for source in SOURCES:
        path = tmp_path / "hi" / "song" / f"{source}.mp3"
        info = sf.info(str(path))
        assert info.format == "MP3" and info.samplerate == SR and info.channels == 2
        assert abs(info.frames - plain[source].shape[-1]) <= 1152  # one MPEG frame of encoder padding
        assert read_provenance(path)["input"].endswith("song.wav")  # provenance survives in the ID3 tag
    hi, lo = (sum(p.stat().st_size for p in (tmp_path / d).rglob("*.mp3")) for d in ("hi", "lo"))
    seconds = 4 * SECONDS
    assert 0.8 * 64 < hi * 8 / 1000 / seconds < 1.3 * 64 and 0.8 * 32 < lo * 8 / 1000 / seconds < 1.3 * 32
    # decoded content follows the estimate (lossy: a loose correlation check)
    decoded = read_mix(tmp_path / "hi" / "song" / "vocals.mp3", SR)
    n = min(decoded.shape[-1], plain["vocals"].shape[-1])
    a, b = decoded[0, :n].numpy(), plain["vocals"][0, :n].numpy()
    best = max(np.corrcoef(a[max(0, -k):n - max(0, k)], b[max(0, k):n - max(0, -k)])[0, 1] for k in range(-1200, 1201, 1))
    assert best > 0.9
    assert _run(setup, tmp_path / "hi", "--format", "mp3", "--mp3-bitrate", "64", "--clip-mode", "none") == 0
    assert "skipped 1 already done" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--mp3-bitrate 100"):
        WriteOptions(format="mp3", mp3_bitrate=100)


def test_filename_template(setup, tmp_path, capsys):
    _, _, plain = setup
    assert _run(setup, tmp_path, "--filename", "{stem}/{track}.{trackext}.{ext}", "--bits", "32",
                "--clip-mode", "none") == 0
    assert _files(tmp_path) == sorted(f"{s}/song.wav.wav" for s in SOURCES)
    assert torch.equal(read_audio(tmp_path / "bass" / "song.wav.wav")[0], plain["bass"])
    assert not list(tmp_path.rglob(".*"))  # staging removed
    assert _run(setup, tmp_path / "flat", "--filename", "{track}_{stem}.{ext}", "--stems", "vocals") == 0
    assert _files(tmp_path / "flat") == ["song_vocals.wav"]
    for template, needle in [("{track}/{name}.{ext}", "unknown variable {name}"),
                             ("{track}.{ext}", "must contain {stem}"),
                             ("../{track}/{stem}.{ext}", "inside the output directory"),
                             ("{track/{stem}", "not a valid template")]:
        err = _error(capsys, _run(setup, tmp_path / "bad", "--filename", template))
        assert needle in err, err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_keep_rate_writes_at_the_input_rate(setup, tmp_path):
    root, _, _ = setup
    song = write_sf(tmp_path / "in" / "hi.wav", tone(SECONDS, 16000), 16000, "WAV", "FLOAT")
    assert _run(setup, tmp_path / "model", "--bits", "32", "--clip-mode", "none", inputs=[str(song)]) == 0
    assert _run(setup, tmp_path / "keep", "--bits", "32", "--clip-mode", "none", "--keep-rate", inputs=[str(song)]) == 0
    for source in SOURCES:
        at_model, sr_model = read_audio(tmp_path / "model" / "hi" / f"{source}.wav")
        kept, sr_kept = read_audio(tmp_path / "keep" / "hi" / f"{source}.wav")
        assert (sr_model, sr_kept) == (SR, 16000)
        assert at_model.shape[-1] == int(SECONDS * SR) and kept.shape[-1] == int(SECONDS * 16000)
        back = resample(at_model, SR, 16000)[..., :kept.shape[-1]]
        assert torch.allclose(kept, back, atol=1e-6)  # the model-rate stems, resampled back


def test_clip_modes(tmp_path, capsys):
    """A loud mix whose estimates exceed 1: rescale divides every stem of the track by
    max(1, 1.01 * peak) (they still add up), clamp clips at 0.99, none keeps float samples."""
    torch.manual_seed(3)
    net = TinyNet(SOURCES, samplerate=SR, hidden=16)
    with torch.no_grad():
        net.body[2].weight.mul_(8)  # loud estimates
    ckpt = save_checkpoint(tmp_path / "loud.ckpt", net, network_config(net))
    loud = np.clip(2 * tone(SECONDS, SR), -0.98, 0.98)
    song = write_sf(tmp_path / "loud.wav", loud, SR, "WAV", "FLOAT")

    def run(out, *options):
        assert main(["separate", str(song), "--model", str(ckpt), "-o", str(tmp_path / out), "--shifts", "0",
                     *options]) == 0
        return {s: read_audio(tmp_path / out / "loud" / f"{s}.wav")[0] for s in SOURCES}

    raw = run("none", "--bits", "32", "--clip-mode", "none")
    peak = max(float(s.abs().max()) for s in raw.values())
    assert peak > 1.05  # the premise: these estimates would clip
    rescaled = run("rescale", "--bits", "32")  # the default mode
    for source in SOURCES:
        assert torch.allclose(rescaled[source], raw[source] / (1.01 * peak), atol=1e-6)
    assert max(float(s.abs().max()) for s in rescaled.values()) < 1
    clamped = run("clamp", "--bits", "32", "--clip-mode", "clamp")
    for source in SOURCES:
        assert torch.equal(clamped[source], raw[source].clamp(-0.99, 0.99))
    pcm = run("pcm", "--bits", "16", "--clip-mode", "none")  # integer formats cannot hold > 1: clipped
    assert torch.allclose(pcm["vocals"], raw["vocals"].clamp(-1, 1), atol=1e-4)
    capsys.readouterr()


# ------------------------------------------------------------------------------------ provenance
def test_rerun_provenance(setup, tmp_path, capsys):
    root, _, _ = setup
    song = root / "in" / "song.wav"
    other = write_sf(tmp_path / "in" / "song.flac", tone(SECONDS, SR, seed=1), SR, "FLAC", "PCM_24")
    out = tmp_path / "out"
    assert _run(setup, out, inputs=[str(song)]) == 0
    record = read_provenance(out / "song" / "vocals.wav")
    assert record["input"] == str(song.resolve()) and record["size"] == song.stat().st_size
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "song").iterdir()}
    assert _run(setup, out, inputs=[str(song)]) == 0  # same input, same options: skipped
    assert "skipped 1 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "song").iterdir()} == mtimes
    # song.flac maps to the same track folder: a one-line error naming both, nothing touched
    err = _error(capsys, _run(setup, out, inputs=[str(other)]))
    assert str(other) in err and str(song.resolve()) in err and "--overwrite" in err
    assert {p: p.stat().st_mtime_ns for p in (out / "song").iterdir()} == mtimes
    # ... also when it would write other files into that track folder (FLAC next to song.wav's WAVs)
    err = _error(capsys, _run(setup, out, "--format", "flac", inputs=[str(other)]))
    assert str(song.resolve()) in err and "--overwrite" in err
    # --overwrite replaces them, and they now record song.flac
    assert _run(setup, out, "--overwrite", "--format", "flac", inputs=[str(other)]) == 0
    assert _files(out) == sorted(f"song/{s}.flac" for s in SOURCES)  # song.wav's stems are gone
    assert _run(setup, out, "--overwrite", inputs=[str(other)]) == 0
    assert read_provenance(out / "song" / "vocals.wav")["input"] == str(other.resolve())
    assert len(_files(out)) == 8  # same input: its FLAC stems are kept beside the new WAVs
    assert "separated 1 file(s)" in capsys.readouterr().out.splitlines()[-1]
    # same input, other options: redone (not skipped, no error)
    assert _run(setup, out, "--clip-mode", "clamp", inputs=[str(other)]) == 0
    assert "separated 1 file(s)" in capsys.readouterr().out
    # an output stemsep did not write (no record) is not silently replaced
    (tmp_path / "user" / "song").mkdir(parents=True)
    sf.write(str(tmp_path / "user" / "song" / "bass.wav"), np.zeros((10, 2)), SR)
    err = _error(capsys, _run(setup, tmp_path / "user", inputs=[str(song)]))
    assert "no record of their input" in err
    # the Python API follows the same rule
    sep = Separator.from_checkpoint(setup[1], device="cpu", shifts=0)
    with pytest.raises(StemsepError, match="already has outputs of"):
        sep.separate_file(song, out)
    assert sep.separate_file(song, out, overwrite=True)["vocals"] == out / "song" / "vocals.wav"
    assert not list(out.rglob(".*"))


def test_write_options_are_validated():
    with pytest.raises(ValueError, match="--bits 32 is float WAV only"):
        WriteOptions(format="flac", bits=32)
    with pytest.raises(ValueError, match="--clip-mode"):
        WriteOptions(clip_mode="soft")
    with pytest.raises(ValueError, match="choose one"):
        WriteOptions(two_stems="vocals", stems="drums")
    assert WriteOptions(stems="drums, vocals").stems == ("drums", "vocals")
    assert WriteOptions(format="mp3", bits=16).format == "mp3"  # --bits does not apply to MP3


# ------------------------------------------------------------------------------------- streaming
def _whole(net, path, shifts, seed):
    return separate_mixes(net, [read_mix(path, SR)], Chunking(shifts=shifts, overlap=0.25, seed=seed))[0]


@pytest.mark.parametrize("shifts", [0, 2])
def test_streaming_equals_whole_file(tmp_path, monkeypatch, shifts):
    """A 6 s file through 0.5 s windows (6 to 12 of them) gives exactly the whole-file stems. With
    random shifts both use the same seed (every window draws the same offsets)."""
    torch.manual_seed(0)
    # with shifts, a segment longer than the largest shift (0.5 s): chunked.py needs it
    net = SegNet(segment=0.6 if shifts else 0.25, sources=SOURCES, samplerate=SR).eval()
    song = write_sf(tmp_path / "song.wav", tone(6.0, SR), SR, "WAV", "FLOAT")
    calls = []
    real = windowed_module.apply_model_many

    def spy(net, mixes, *args, **kwargs):
        calls.append(mixes[0].shape[-1])
        return real(net, mixes, *args, **kwargs)

    monkeypatch.setattr(windowed_module, "apply_model_many", spy)
    sep = Separator(net, device=torch.device("cpu"), shifts=shifts, window=0.5, seed=7)
    written = sep.separate_file(song, tmp_path / "out", bits=32, clip_mode="none")
    plan = Chunking(shifts=shifts).window_plan(net, window=0.5)
    assert len(calls) >= 5 and max(calls) <= plan.length < 48000  # window by window, each of bounded size
    expected = _whole(net, song, shifts, 7)
    for j, source in enumerate(SOURCES):
        stem, _ = read_audio(written[source])
        assert torch.equal(stem, expected[j]), (source, (stem - expected[j]).abs().max())


def test_streaming_bag_resampled_two_stems(tmp_path):
    """A bag of two segment lengths (windows aligned to both strides), a 16 kHz input resampled as a
    stream, --two-stems and --keep-rate: the same as the whole-file path."""
    torch.manual_seed(1)
    nets = [SegNet(segment=0.25, sources=SOURCES, samplerate=SR), SegNet(segment=0.3, sources=SOURCES, samplerate=SR)]
    bag = BagOfModels(nets, weights=[[1, 1, 0, 1], [1, 0, 1, 1]]).eval()
    song = write_sf(tmp_path / "song.wav", tone(4.0, 16000, seed=2), 16000, "WAV", "FLOAT")
    sep = Separator(bag, device=torch.device("cpu"), shifts=0, window=0.75)
    written = sep.separate_file(song, tmp_path / "out", bits=32, clip_mode="none", two_stems="vocals",
                                keep_rate=True)
    assert Chunking().window_plan(bag, window=0.75).align == 9000  # lcm of the 1500- and 1800-sample strides
    whole = _whole(bag, song, 0, 0)
    expected = {"vocals": whole[3], "no_vocals": whole[0] + whole[1] + whole[2]}
    for name, path in written.items():
        stem, sr = read_audio(path)
        assert sr == 16000 and stem.shape == (2, 4 * 16000)
        assert torch.allclose(stem, resample(expected[name], SR, 16000), atol=1e-6), name


@pytest.mark.slow
def test_streaming_htdemucs_equals_whole_file(tmp_path):
    """HT Demucs (pads every chunk to its training segment itself), 1 s windows, shifts=1: bit-identical."""
    from stemsep.models import HTDemucs

    torch.manual_seed(0)
    net = HTDemucs(sources=SOURCES, channels=8, depth=2, t_layers=1, segment=1, nfft=256, samplerate=SR,
                   t_heads=2).eval()
    song = write_sf(tmp_path / "song.wav", tone(5.0, SR), SR, "WAV", "FLOAT")
    sep = Separator(net, device=torch.device("cpu"), shifts=1, window=1.0, seed=11)
    written = sep.separate_file(song, tmp_path / "out", bits=32, clip_mode="none")
    expected = _whole(net, song, 1, 11)
    for j, source in enumerate(SOURCES):
        assert torch.equal(read_audio(written[source])[0], expected[j]), source


def test_iter_mix_equals_read_mix(tmp_path):
    """The streaming reader gives read_mix's samples for a resampled WAV, an MP3 and a 6-channel FLAC."""
    cases = [write_sf(tmp_path / "a.wav", tone(2.0, 44100), 44100, "WAV", "PCM_16"),
             write_sf(tmp_path / "b.mp3", tone(2.0, 16000), 16000, "MP3", "MPEG_LAYER_III"),
             write_sf(tmp_path / "c.flac", tone(2.0, SR, channels=6), SR, "FLAC", "PCM_24")]
    for path in cases:
        info: dict = {}
        blocks = list(iter_mix(path, SR, 2, block=3000, info=info))
        streamed = np.concatenate(blocks, axis=1)
        whole = read_mix(path, SR).numpy()
        assert len(blocks) > 1 and streamed.shape == whole.shape
        assert np.abs(streamed - whole).max() <= 1e-6, path
        assert info["frames"] == sf.info(str(path)).frames or path.suffix == ".mp3"


def test_streaming_is_atomic_on_failure(tmp_path, monkeypatch):
    """A failure in the middle of a streamed file leaves no output and no temporaries."""
    net = SegNet(sources=SOURCES, samplerate=SR).eval()
    song = write_sf(tmp_path / "song.wav", tone(4.0, SR), SR, "WAV", "FLOAT")
    real, calls = windowed_module.apply_model_many, []

    def failing(net, mixes, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(net, mixes, *args, **kwargs)

    monkeypatch.setattr(windowed_module, "apply_model_many", failing)
    sep = Separator(net, device=torch.device("cpu"), shifts=0, window=0.5)
    with pytest.raises(RuntimeError, match="boom"):
        sep.separate_file(song, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*"))


def test_provenance_record_is_json(setup):
    root, _, _ = setup
    text = sf.SoundFile(str(root / "plain" / "song" / "drums.wav")).comment
    record = json.loads(text)
    assert set(record) == {"stemsep", "input", "size", "mtime_ns", "options"}
