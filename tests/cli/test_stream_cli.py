"""``stemsep stream`` end to end (issue 25), typed as a user types it: files and folders into stem
files equal to the offline separation and laid out as ``separate`` lays them out, raw PCM through a
real pipe, ``--realtime`` with a network too slow for it, and the one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers.live import (
    SR,
    checkpoint,
    tiny_windowed,
)
from stemsep.cli import main
from stemsep.inference import Separator
from stemsep.inference.chunked import Chunking, apply_model
from stemsep.inference.devices import LiveAudioError, sounddevice
from stemsep.inference.live import RawCodec
from stemsep.inference.separator import load_models
from stemsep.io.audio import read_mix, write_audio

SOURCES = ["drums", "bass", "other", "vocals"]
TOL = 1e-5


def _mix(path: Path, samplerate: int = SR, channels: int = 2, seconds: float = 0.4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    bits = 24 if path.suffix == ".flac" else 32
    write_audio(path, rng.uniform(-0.4, 0.4, (channels, int(seconds * samplerate))), samplerate, bits=bits)
    return path


def _stems(folder: Path) -> torch.Tensor:
    return torch.stack([torch.from_numpy(sf.read(folder / f"{s}.wav", dtype="float32")[0].T) for s in SOURCES])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _run(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("samplerate,channels", [(SR, 2), (SR, 1), (16000, 2)],
                         ids=["model rate", "mono into stereo", "resampled"])
def test_file_to_stems_equals_offline_and_separate_layout(causal_ckpt, tmp_path, capsys, samplerate, channels):
    net, ckpt = causal_ckpt
    mix = _mix(tmp_path / "in" / "song.wav", samplerate, channels)
    code, err = _run(["stream", str(mix), "--model", str(ckpt), "-o", str(tmp_path / "out"), "--bits", "32",
                      "--clip-mode", "none"], capsys)
    assert code == 0, err
    assert "latency    63 samples = 7.9 ms" in err and "under-runs" in err
    with torch.no_grad():
        offline = net(read_mix(mix, SR, 2)[None])[0]  # resampled and mono duplicated, as separate reads it
    streamed = _stems(tmp_path / "out" / "song")
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max() <= TOL
    assert main(["separate", str(mix), "--model", str(ckpt), "-o", str(tmp_path / "sep")]) == 0
    assert _files(tmp_path / "out") == _files(tmp_path / "sep") == sorted(f"song/{s}.wav" for s in SOURCES)


def test_folder_windowed_network_equals_apply_model(windowed_ckpt, tmp_path, capsys):
    net, ckpt = windowed_ckpt
    for name, seed in (("a.wav", 1), ("sub/b.flac", 2)):
        _mix(tmp_path / "music" / name, seed=seed)
    code, err = _run(["stream", str(tmp_path / "music"), "--model", str(ckpt), "-o", str(tmp_path / "out"),
                      "--overlap", "0.5", "--block", "97", "--filename", "{folder}/{track}/{stem}.{ext}",
                      "--bits", "32", "--clip-mode", "none"], capsys)
    assert code == 0, err
    assert "block(s) of 97 samples" in err
    for track, name in (("a", "a.wav"), ("sub/b", "sub/b.flac")):
        mix = read_mix(tmp_path / "music" / name, SR, 2)
        with torch.no_grad():
            offline = apply_model(net, mix[None], Chunking(overlap=0.5))[0]
        assert (_stems(tmp_path / "out" / track) - offline).abs().max() <= TOL
    assert main(["separate", str(tmp_path / "music"), "--model", str(ckpt), "-o", str(tmp_path / "sep"),
                 "--filename", "{folder}/{track}/{stem}.{ext}"]) == 0
    assert _files(tmp_path / "out") == _files(tmp_path / "sep")


def test_int8_checkpoint_in_a_bag_equals_offline(causal_ckpt, tmp_path, capsys):
    """A ``stemsep quantize`` checkpoint bagged with the float one: streamed step by step, the stems
    are the bag's offline ``net(whole)``."""
    _, ckpt = causal_ckpt
    int8 = tmp_path / "int8.ckpt"
    assert main(["quantize", str(ckpt), "-o", str(int8)]) == 0
    mix = _mix(tmp_path / "song.wav", seed=4)
    code, err = _run(["stream", str(mix), "--model", str(int8), "--model", str(ckpt), "-o", str(tmp_path / "out"),
                      "--bits", "32", "--clip-mode", "none"], capsys)
    assert code == 0, err
    assert "latency    63 samples" in err
    bag = load_models([int8, ckpt], None, torch.device("cpu"))
    with torch.no_grad():
        offline = bag(read_mix(mix, SR, 2)[None])[0]
    assert (_stems(tmp_path / "out" / "song") - offline).abs().max() <= TOL


def test_rerun_replaces_and_another_inputs_outputs_are_kept(causal_ckpt, tmp_path, capsys):
    _, ckpt = causal_ckpt
    first = _mix(tmp_path / "a" / "song.wav", seed=1)
    out = str(tmp_path / "out")
    assert _run(["stream", str(first), "--model", str(ckpt), "-o", out], capsys)[0] == 0
    assert _run(["stream", str(first), "--model", str(ckpt), "-o", out], capsys)[0] == 0
    other = _mix(tmp_path / "b" / "song.wav", seed=2)
    code, err = _run(["stream", str(other), "--model", str(ckpt), "-o", out], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("stemsep: error: ")
    assert "already has outputs of" in err and "--overwrite" in err
    assert _run(["stream", str(other), "--model", str(ckpt), "-o", out, "--overwrite"], capsys)[0] == 0


def test_raw_pcm_through_a_real_pipe(causal_ckpt, tmp_path):
    """Bytes in on stdin, bytes out on stdout (a subprocess, as in an ffmpeg | stemsep | ffplay pipe):
    the Python API's live signal, which is the offline separation ``latency`` samples late."""
    net, ckpt = causal_ckpt
    mix = np.random.default_rng(5).uniform(-0.5, 0.5, (2, 3000)).astype(np.float32)
    codec = RawCodec("float32")
    done = subprocess.run([sys.executable, "-m", "stemsep", "stream", "-", "--rate", str(SR), "--channels", "2",
                           "--dtype", "float32", "--model", str(ckpt), "--stdout", "--block", "100"],
                          input=codec.encode(mix[None]), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"under-runs" in done.stderr
    got = torch.from_numpy(codec.decode(done.stdout, 4 * 2).reshape(4, 2, -1))
    streamer = Separator.from_checkpoint(ckpt, "cpu").stream()
    live = torch.cat([streamer.push(torch.from_numpy(mix)), streamer.flush()], -1)
    assert got.shape == live.shape == (4, 2, 3000 + 63)
    assert (got - live).abs().max() <= TOL
    with torch.no_grad():
        assert (got[..., 63:] - net(torch.from_numpy(mix)[None])[0]).abs().max() <= TOL
    assert not got[..., :63].any()


def test_realtime_with_a_slow_network_reports_under_runs_and_finishes(tmp_path, capsys):
    ckpt = checkpoint(tiny_windowed(delay=0.06), tmp_path / "slow.ckpt")  # 60 ms per chunk, one per 37.5 ms block
    mix = _mix(tmp_path / "song.wav", seconds=0.3)
    code, err = _run(["stream", str(mix), "--model", str(ckpt), "-o", str(tmp_path / "out"), "--realtime"], capsys)
    assert code == 0, err
    assert "paced to the wall clock" in err and "block(s) of 300 samples" in err
    underruns = int(err.split("under-runs ")[1].split()[0].rstrip(","))
    assert underruns >= 2, err
    assert sf.info(str(tmp_path / "out" / "song" / "vocals.wav")).frames == 2400  # every sample written


# More bad input (tests/cli/test_bad_input_table.py has --block 0 and 1.5, '-' without --rate, '-' at another
# rate, a network without a segment, an unknown --input-device).
BAD = {
    "block negative": (["FILE", "--block", "-3"], "--block -3: must be a positive whole number"),
    "block not a number": (["FILE", "--block", "x"], "--block x: must be a positive whole number"),
    "stdin without channels": (["-", "--rate", "8000"], "'-' (raw PCM on stdin) needs --rate and --channels"),
    "rate given for a file": (["FILE", "--rate", "8000"], "--rate 8000: only raw PCM on stdin ('-') needs it"),
    "no output": (["FILE", "NO_OUT"], "choose where the stems go"),
    "no input": (["NO_IN"], "name an input"),
    "unknown source": (["FILE", "--stems", "voice"], "--stems: unknown source(s) voice"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line(name, causal_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    extra, needle = BAD[name]
    mix = str(_mix(tmp_path / "song.wav", seconds=0.05))
    argv = ["stream", *[mix if a == "FILE" else a for a in extra if a not in ("NO_OUT", "NO_IN")],
            "--model", str(causal_ckpt[1])]
    if "NO_OUT" not in extra:
        argv += ["-o", str(tmp_path / "out")]
    code, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("stemsep: error: ") and "Traceback" not in err, err
    assert needle in lines[-1], lines[-1]
    assert not (tmp_path / "out").exists()


def test_live_extra_missing_names_the_install(causal_ckpt, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # imported as on a machine without the package
    code, err = _run(["stream", "--input-device", "0", "--model", str(causal_ckpt[1]), "--stdout"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (
        "stemsep: error: --input-device 0: live audio needs the optional package sounddevice: "
        "pip install 'stemsep[live]'")
    code, err = _run(["stream", "--list-devices"], capsys)
    assert code == 2 and "pip install 'stemsep[live]'" in err.strip().splitlines()[-1]


NULL_CARD = """pcm.nullcard {
    type null
    hint { show on description "stemsep test: ALSA's null device" }
}
"""


def test_live_devices_through_portaudio(causal_ckpt, tmp_path, capsys):
    """Where PortAudio is installed: a real device, ALSA's null card (declared in the ``.asoundrc`` of
    a HOME of the test's own), captured for 0.3 s into stem files while the vocals play on it; where
    it is not, the one-line fix. Nothing pretends to be PortAudio."""
    try:
        sounddevice()
    except LiveAudioError:
        code, err = _run(["stream", "--list-devices"], capsys)
        assert code == 2 and "apt-get install libportaudio2" in err.strip().splitlines()[-1]
        return
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".asoundrc").write_text(NULL_CARD)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    with pytest.raises(SystemExit) as listed:  # prints and exits, as --help does
        main(["stream", "--list-devices"])
    assert listed.value.code == 0 and capsys.readouterr().out.strip()  # this process has its own HOME: maybe none
    done = subprocess.run([sys.executable, "-m", "stemsep", "stream", "--input-device", "nullcard", "--seconds", "0.3", "--output-device", "null",
                           "--model", str(causal_ckpt[1]), "-o", str(tmp_path / "out"), "--stems", "vocals"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "paced by the device" in done.stderr and "latency    63 samples" in done.stderr
    assert _files(tmp_path / "out") == ["live/vocals.wav"]
    assert sf.info(str(tmp_path / "out" / "live" / "vocals.wav")).frames == int(0.3 * SR)
