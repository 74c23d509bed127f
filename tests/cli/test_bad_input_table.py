"""The bad-input table: every command stops on bad input with one line, and leaves no partial output.

Each case prepares one kind of bad input for one command (``synth``, ``shard``, ``fit``,
``separate``, ``score``, ``audit``, ``import-demucs``) and runs it through ``stemsep.cli.main``
in-process. Every case must give: exit status 2; stderr whose last line is
``stemsep: error: ...`` naming the file or key and the problem; no Python traceback; and no
partial output (the case's output paths are absent or empty, and no temporary file is left
anywhere under the test's folder).
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import stemsep.training.cli  # noqa: F401  (Lightning binds its log handler to stderr now, not to a test's capsys)
from helpers import REPO, TinyNet
from helpers.data import copy_shards, leftovers
from stemsep.cli import main
from stemsep.io.audio import write_audio
from stemsep.io.checkpoint import save_checkpoint

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")
SR = 8000  # separate/score cases: a TinyNet at 8 kHz
SOURCES = ["drums", "bass", "other", "vocals"]


@dataclass
class Case:
    argv: list[str]
    needles: tuple[str, ...]  # each must appear in the error line (file or key, and the problem)
    absent: list[Path] = field(default_factory=list)  # outputs that must not exist (or be empty folders)


class Env:
    """What a case may use: its own folder, copies of the shared corpus/shards, a checkpoint."""

    def __init__(self, tmp: Path, corpus_root: Path, shards: Path, ckpt: Path, monkeypatch):
        self.tmp, self._corpus_root, self._shards, self.ckpt, self.monkeypatch = tmp, corpus_root, shards, ckpt, monkeypatch

    def corpus(self) -> Path:
        return Path(shutil.copytree(self._corpus_root, self.tmp / "corpus"))

    def shards(self) -> Path:
        return copy_shards(self._shards, self.tmp / "shards")

    def file_parent(self) -> Path:
        """An output path whose parent is a regular file: not creatable, even as root."""
        blocker = self.tmp / "blocker"
        blocker.write_text("a file, not a folder")
        return blocker / "out"

    def disk_full(self, target: str = "stemsep.io.files.os.replace") -> None:
        """Writes fail as on a full disk (the final rename of every atomic write, by default)."""
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.monkeypatch.setattr(target, full)

    def mix(self, name: str = "mix.wav", data: np.ndarray | None = None) -> Path:
        path = self.tmp / "in" / name
        rng = np.random.default_rng(0)
        write_audio(path, rng.uniform(-0.3, 0.3, (2, SR // 2)) if data is None else data, SR, bits=32)
        return path

    def separate(self, mix: Path, *needles: str, ckpt: Path | None = None) -> Case:
        out = self.tmp / "separated"
        return Case(["separate", str(mix), "--model", str(ckpt or self.ckpt), "-o", str(out)], needles, [out])

    def score_dirs(self) -> tuple[Path, Path]:
        rng = np.random.default_rng(1)
        refs, ests = self.tmp / "refs", self.tmp / "ests"
        for source in SOURCES:
            write_audio(refs / "song" / f"{source}.wav", rng.uniform(-0.3, 0.3, (2, SR)), SR, bits=32)
            write_audio(ests / "song" / f"{source}.wav", rng.uniform(-0.3, 0.3, (2, SR)), SR, bits=32)
        return refs, ests

    def score(self, refs: Path, ests: Path, out: Path | None = None) -> list[str]:
        out = out or self.tmp / "scores"
        return ["score", "--references", str(refs), "--estimates", str(ests), "-o", str(out), "--metrics", "sdr"]


CASES: dict[str, Callable[[Env], Case]] = {}


def case(fn: Callable[[Env], Case]) -> Callable[[Env], Case]:
    CASES[fn.__name__] = fn
    return fn


def _fit(env: Env, *extra: str, root: Path | None = None) -> list[str]:
    return ["fit", "--config", QUICKSTART, "--data.init_args.prepare.root", str(root or env.tmp / "nowhere"),
            "--data.init_args.synthetic", "null", "--trainer.max_steps", "1",
            "--trainer.default_root_dir", str(env.tmp / "run"), *extra]


def _fit_on_shards(env: Env, shards: Path) -> list[str]:
    return [*_fit(env), "--data.init_args.prepare", "null",
            "--data.init_args.train_manifest", str(shards / "train.json"),
            "--data.init_args.valid_manifest", str(shards / "test.json")]


def _first_train_shard(shards: Path) -> Path:
    return shards / json.loads((shards / "train.json").read_text())["shards"][0]["name"]


def _shard(env: Env, root: Path) -> tuple[list[str], Path]:
    out = env.tmp / "out"
    return ["shard", "--layout", "musdb", "--root", str(root), "--out", str(out), "--split", "train",
            "--max-shard-size", "1MB"], out


def _tiny_checkpoint(path: Path, net: torch.nn.Module, config: dict) -> Path:
    save_checkpoint(path, net, config)
    return path


# ---------------------------------------------------------------------------------- synth
@case
def synth_unwritable_output_directory(env):
    out = env.file_parent()
    return Case(["synth", "--out", str(out), "--songs", "1", "--seconds", "0.5"],
                (str(out), "cannot create output directory"), [out])


@case
def synth_disk_full(env):
    env.disk_full("stemsep.data.corpus.synth._write_pcm24")
    out = env.tmp / "synth"
    return Case(["synth", "--out", str(out), "--songs", "1", "--test-songs", "0", "--seconds", "0.5"],
                ("song0000", "No space left on device"), [out / "train"])


# ---------------------------------------------------------------------------------- shard
@case
def shard_empty_file(env):
    root = env.corpus()
    path = root / "train" / "song0001" / "drums.wav"
    path.write_bytes(b"")
    argv, out = _shard(env, root)
    return Case(argv, (str(path), "not a readable audio file"), [out])


@case
def shard_zero_length_stem(env):
    root = env.corpus()
    path = root / "train" / "song0002" / "vocals.wav"
    write_audio(path, np.zeros((2, 0)), 44100)
    argv, out = _shard(env, root)
    return Case(argv, (str(path), "empty"), [out])


@case
def shard_missing_stem(env):
    root = env.corpus()
    (root / "train" / "song0003" / "other.wav").unlink()
    argv, out = _shard(env, root)
    return Case(argv, ("song0003", "missing stem 'other'"), [out])


@case
def shard_disk_full(env):
    env.disk_full()
    argv, out = _shard(env, env._corpus_root)
    return Case(argv, ("train-000000.tar", "No space left on device"), [out])


# ------------------------------------------------------------------------------------ fit
@case
def fit_missing_data_directory(env):
    return Case(_fit(env), (str(env.tmp / "nowhere"), "not found"))


@case
def fit_missing_stem(env):
    root = env.corpus()
    (root / "train" / "song0001" / "bass.wav").unlink()
    return Case(_fit(env, root=root), ("song0001", "bass"), [root / "shards"])


def _fit_with_edited_stem(env, song: str, stem: str, edit, expected: str) -> Case:
    """Rewrite one stem of a fresh corpus with ``edit(data, rate) -> (data, rate)``; ``fit`` must name it."""
    root = env.corpus()
    path = root / "train" / song / f"{stem}.wav"
    data, rate = sf.read(path)
    sf.write(path, *edit(data, rate), subtype="PCM_24")
    return Case(_fit(env, root=root), (str(path), expected), [root / "shards"])


@case
def fit_wrong_sample_rate(env):
    return _fit_with_edited_stem(env, "song0002", "drums", lambda data, rate: (data, 48000), "48000")


@case
def fit_stems_of_different_lengths(env):
    return _fit_with_edited_stem(env, "song0000", "vocals", lambda data, rate: (data[:-100], rate), "length")


@case
def fit_mono_where_stereo_expected(env):
    return _fit_with_edited_stem(env, "song0000", "other", lambda data, rate: (data[:, 0], rate), "channel")


@case
def fit_non_audio_file(env):
    root = env.corpus()
    path = root / "train" / "song0003" / "bass.wav"
    path.write_bytes(b"this is not audio" * 10)
    return Case(_fit(env, root=root), (str(path), "not a readable audio file"), [root / "shards"])


@case
def fit_unknown_config_key(env):
    return Case(_fit(env, "--model.no_such_key", "3"), ("no_such_key",))


@case
def fit_unknown_key_in_config_file(env):
    bad = env.tmp / "bad.yaml"
    bad.write_text("model:\n  optimiser_typo: 1\n")
    return Case(_fit(env, "--config", str(bad)), ("optimiser_typo",))


@case
def fit_wrong_type_in_config(env):
    return Case(_fit(env, "--data.init_args.batch_size", "four"), ("batch_size", "four"))


@case
def fit_truncated_tar(env):
    shards = env.shards()
    shard = _first_train_shard(shards)
    shard.write_bytes(shard.read_bytes()[:30000])
    return Case(_fit_on_shards(env, shards), (shard.name, "truncated or corrupt tar"))


@case
def fit_sha256_mismatch(env):
    shards = env.shards()
    shard = _first_train_shard(shards)
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0xFF  # in the tar's zero padding: the tar still parses, the hash differs
    shard.write_bytes(bytes(data))
    return Case(_fit_on_shards(env, shards), (shard.name, "sha256 mismatch"))


@case
def fit_init_from_checkpoint_of_another_architecture(env):
    return Case([*_fit_on_shards(env, env._shards), "--model.init_from", str(env.ckpt)],
                (str(env.ckpt), "weights do not fit HTDemucs", "missing key"))


# ------------------------------------------------------------------------------- separate
def _separate_non_finite(env: Env, name: str, channel: int, index: int, value: float) -> Case:
    data = np.zeros((2, SR // 2))
    data[channel, index] = value
    mix = env.mix(name, data)
    return env.separate(mix, str(mix), "NaN or Inf")


@case
def separate_nan_samples(env):
    return _separate_non_finite(env, "nan.wav", 1, 100, np.nan)


@case
def separate_inf_samples(env):
    return _separate_non_finite(env, "inf.wav", 0, 7, np.inf)


@case
def separate_empty_file(env):
    mix = env.tmp / "in" / "empty.wav"
    mix.parent.mkdir(parents=True)
    mix.write_bytes(b"")
    return env.separate(mix, str(mix), "not a readable audio file")


@case
def separate_zero_length_file(env):
    mix = env.mix("silence.wav", np.zeros((2, 0)))
    return env.separate(mix, str(mix), "empty")


@case
def separate_unwritable_output_directory(env):
    out = env.file_parent()
    return Case(["separate", str(env.mix()), "--model", str(env.ckpt), "-o", str(out)],
                (str(out), "cannot create output directory"))


@case
def separate_disk_full(env):
    mix = env.mix()
    env.disk_full()
    return env.separate(mix, "separated", "drums.wav", "No space left on device")


@case
def separate_checkpoint_with_missing_keys(env):
    ckpt = torch.load(env.ckpt, weights_only=True)
    del ckpt["state_dict"]["net.body.2.bias"]
    path = env.tmp / "missing.ckpt"
    torch.save(ckpt, path)
    return env.separate(env.mix(), str(path), "1 missing key(s)", "body.2.bias", ckpt=path)


@case
def separate_checkpoint_of_another_architecture(env):
    ckpt = torch.load(env.ckpt, weights_only=True)
    ckpt["hyper_parameters"]["net"] = {"class_path": "stemsep.models.htdemucs.HTDemucs",
                                       "init_args": {"sources": SOURCES, "channels": 8, "depth": 2,
                                                     "samplerate": SR, "segment": 1, "nfft": 256}}
    path = env.tmp / "other_arch.ckpt"
    torch.save(ckpt, path)
    return env.separate(env.mix(), str(path), "weights do not fit HTDemucs", ckpt=path)


@case
def separate_truncated_checkpoint(env):
    path = env.tmp / "truncated.ckpt"
    path.write_bytes(env.ckpt.read_bytes()[:500])
    return env.separate(env.mix(), str(path), "truncated or corrupt", ckpt=path)


@case
def separate_random_bytes_checkpoint(env):
    path = env.tmp / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return env.separate(env.mix(), str(path), "is not a PyTorch checkpoint", ckpt=path)


@case
def separate_cuda_without_gpu(env):
    env.monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on a machine without a GPU
    case = env.separate(env.mix(), "--device cuda: no CUDA GPU is visible", "use --device cpu")
    case.argv += ["--device", "cuda"]
    return case


@case
def separate_unknown_device(env):
    case = env.separate(env.mix(), "--device tpu: unknown device", "cpu, cuda, cuda:N, mps")
    case.argv += ["--device", "tpu"]
    return case


# ---------------------------------------------------------------------------------- score
@case
def score_nan_samples_in_estimate(env):
    refs, ests = env.score_dirs()
    path = ests / "song" / "bass.wav"
    data = np.zeros((2, SR))
    data[0, 5] = np.nan
    write_audio(path, data, SR, bits=32)
    return Case(env.score(refs, ests), (str(path), "NaN or Inf"), [env.tmp / "scores"])


@case
def score_reference_stems_of_different_lengths(env):
    refs, ests = env.score_dirs()
    path = refs / "song" / "other.wav"
    write_audio(path, np.full((2, SR - 10), 0.1), SR, bits=32)
    return Case(env.score(refs, ests), (str(path), "samples, other stems"), [env.tmp / "scores"])


@case
def score_zero_length_stem(env):
    refs, ests = env.score_dirs()
    path = refs / "song" / "drums.wav"
    write_audio(path, np.zeros((2, 0)), SR)
    return Case(env.score(refs, ests), (str(path), "empty"), [env.tmp / "scores"])


@case
def score_disk_full(env):
    refs, ests = env.score_dirs()
    env.disk_full()
    out = env.tmp / "scores"
    return Case(env.score(refs, ests, out), (str(out / "song.json"), "No space left on device"), [out])


# ---------------------------------------------------------------------------------- audit
@case
def audit_non_json_manifest(env):
    bad = env.tmp / "train.json"
    bad.write_bytes(b"\x00\x01 not json")
    out = env.tmp / "keep.json"
    return Case(["audit", "--shards", str(bad), "--out", str(out)], (str(bad), "not valid JSON"), [out])


@case
def audit_truncated_tar(env):
    shards = env.shards()
    shard = _first_train_shard(shards)
    shard.write_bytes(shard.read_bytes()[:30000])
    out = env.tmp / "keep.json"
    return Case(["audit", "--shards", str(shards / "train.json"), "--model", str(env.ckpt), "--out", str(out)],
                (shard.name, "truncated or corrupt tar"), [out])


@case
def audit_unwritable_output_directory(env):
    out = env.file_parent()
    return Case(["audit", "--shards", str(env._shards / "train.json"), "--out", str(out / "keep.json")],
                (str(out), "cannot create output directory"), [out])


# -------------------------------------------------------------------------- import-demucs
@case
def import_demucs_empty_file(env):
    path = env.tmp / "empty.th"
    path.write_bytes(b"")
    out = env.tmp / "out.ckpt"
    return Case(["import-demucs", str(path), "-o", str(out)], (str(path), "truncated or corrupt"), [out])


@case
def import_demucs_disk_full(env):
    hdemucs = pytest.importorskip("demucs.hdemucs")
    path = env.tmp / "hdemucs.th"
    net = hdemucs.HDemucs(sources=SOURCES, channels=4, depth=2, nfft=256)
    torch.save({"klass": hdemucs.HDemucs, "args": (), "kwargs": {"sources": SOURCES, "channels": 4, "depth": 2,
                                                                  "nfft": 256},
                "state": net.state_dict()}, path)
    env.disk_full()
    out = env.tmp / "out.ckpt"
    return Case(["import-demucs", str(path), "-o", str(out)], (str(out), "No space left on device"), [out])


# --------------------------------------------------------------------------------- stream
def _stream(env: Env, needles: tuple[str, ...], *args: str) -> Case:
    """``stemsep stream ARGS`` (default: a file of the table) into ``-o <tmp>/streamed``."""
    out = env.tmp / "streamed"
    return Case(["stream", *(args or (str(env.mix()),)), "--model", str(env.ckpt), "-o", str(out)], needles, [out])


@case
def stream_zero_block(env):
    return _stream(env, ("--block 0", "must be a positive whole number"), str(env.mix()), "--block", "0")


@case
def stream_fractional_block(env):
    return _stream(env, ("--block 1.5", "must be a positive whole number"), str(env.mix()), "--block", "1.5")


@case
def stream_stdin_without_rate(env):
    return _stream(env, ("'-' (raw PCM on stdin)", "needs --rate and --channels"), "-", "--channels", "2")


@case
def stream_stdin_at_another_rate(env):
    return _stream(env, ("--rate 44100", f"the model runs at {SR} Hz", "not resampled"),
                   "-", "--rate", "44100", "--channels", "2")


@case
def stream_network_without_segment(env):
    return _stream(env, ("TinyNet", "no --segment"))  # the table's TinyNet has no segment and is not causal


@case
def stream_unknown_input_device(env):
    # the rest of the line names the fix: install PortAudio, or the devices there are
    return _stream(env, ("--input-device no-such-card",), "--input-device", "no-such-card")


# ---------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = TinyNet(samplerate=SR)
    return _tiny_checkpoint(tmp_path_factory.mktemp("table_ckpt") / "tiny.ckpt", net,
                            {"class_path": "helpers.nets.TinyNet", "init_args": net.init_args})


def test_table_has_the_cases_the_issue_lists():
    commands = {name.split("_")[0].replace("import", "import-demucs") for name in CASES}
    assert commands == {"synth", "shard", "fit", "separate", "score", "audit", "import-demucs", "stream"}
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, corpus_root, shards, tiny_ckpt, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    env = Env(tmp_path, corpus_root, shards, tiny_ckpt, monkeypatch)
    bad = CASES[name](env)
    capsys.readouterr()
    code = main(bad.argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err[-2000:])
    line = lines[-1] if lines else ""
    assert line.startswith("stemsep: error: "), captured.err[-2000:]
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    for needle in bad.needles:
        assert needle in line, (needle, line)
    for path in bad.absent:
        assert not path.exists() or (path.is_dir() and not any(p.is_file() for p in path.rglob("*"))), \
            sorted(map(str, path.rglob("*")))
    assert not leftovers(tmp_path)
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # fit: no checkpoint of a run that never trained


def test_debug_shows_the_traceback(tmp_path):
    from stemsep.errors import BadAudioError

    with pytest.raises(BadAudioError, match="file not found"):
        main(["--debug", "separate", str(tmp_path / "missing.wav"), "--model", "x.ckpt", "-o", str(tmp_path)])


def test_unknown_command(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
