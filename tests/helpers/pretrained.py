"""Tiny released models in their real formats, served on 127.0.0.1 as a model registry (issue 28's tests).

:func:`serve_models` writes, into a served folder, what the real releases are — a demucs model package
written by demucs' own ``serialize_model``/``save_with_checksum`` (``<sig>-<sha256[:8]>.th``), a bag of
four of them with demucs' bag YAML, an MSST ``state_dict`` saved from the bs-roformer oracle with its
YAML — and a registry file naming them (``STEMSEP_REGISTRY``), fetched through ``STEMSEP_MODEL_MIRROR``
into a private ``STEMSEP_CACHE``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import yaml

from helpers.remote import ShardServer
from stemsep.cli import main

SOURCES = ["drums", "bass", "other", "vocals"]
ORIGIN = "https://models.example.invalid/releases"  # never reached: the mirror serves every file
ROFORMER = {"dim": 16, "depth": 1, "time_transformer_depth": 1, "freq_transformer_depth": 1, "dim_head": 8,
            "heads": 2, "stft_n_fft": 512, "stft_win_length": 512, "stft_hop_length": 128,
            "freqs_per_bands": (32, 32, 64, 129)}


def tiny_htdemucs(seed: int):
    """A small demucs HTDemucs (demucs' own class), seeded."""
    htdemucs = pytest.importorskip("demucs.htdemucs")
    torch.manual_seed(seed)
    return htdemucs.HTDemucs(SOURCES, channels=8, depth=4, t_layers=1, t_heads=4, segment=Fraction(1),
                             bottom_channels=16, dconv_mode=3)


def write_demucs_package(model, folder: Path, stem: str) -> Path:
    """``<stem>-<sha256[:8]>.th`` as demucs writes a release."""
    states = pytest.importorskip("demucs.states")
    with _omegaconf():
        package = states.serialize_model(model, {"epochs": 360})
    states.save_with_checksum(package, folder / f"{stem}.th")
    (path,) = folder.glob(f"{stem}-*.th")
    return path


@contextlib.contextmanager
def _omegaconf() -> Iterator[None]:
    """omegaconf (used by serialize_model only to turn the training config into containers), or a
    stand-in for the call alone: left in sys.modules, it would fool Lightning's check for the package."""
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        sys.modules["omegaconf"] = types.SimpleNamespace(
            OmegaConf=types.SimpleNamespace(to_container=lambda cfg, resolve: dict(cfg)))
        try:
            yield
        finally:
            del sys.modules["omegaconf"]
        return
    yield


def write_msst(folder: Path, stem: str, seed: int) -> tuple[Path, Path]:
    """An MSST release: ``torch.save(model.state_dict())`` of the bs-roformer oracle, and its YAML."""
    bs_roformer = pytest.importorskip("bs_roformer")
    torch.manual_seed(seed)
    oracle = bs_roformer.BSRoformer(stereo=True, num_stems=4, **ROFORMER)
    torch.save(oracle.state_dict(), folder / f"{stem}.ckpt")
    lines = ["audio:", "  chunk_size: 8192", "  num_channels: 2", "  sample_rate: 44100", "model:"]
    lines += [f"  {k}: {list(v) if isinstance(v, tuple) else v}" for k, v in ROFORMER.items()]
    lines += ["  stereo: true", "  num_stems: 4", "  zero_dc: false", "training:",
              f"  instruments: [{', '.join(SOURCES)}]", "  target_instrument: null"]
    (folder / f"{stem}.yaml").write_text("\n".join(lines) + "\n")
    return folder / f"{stem}.ckpt", folder / f"{stem}.yaml"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Served:
    """The served folder, its server, the registry file, the cache and the files of each model."""

    folder: Path
    server: ShardServer
    registry: Path
    cache: Path
    files: dict[str, list[Path]]

    def downloads(self, name: str) -> int:
        """Full-file GET requests (no Range) the server received for ``name``'s files."""
        names = {p.name for p in self.files[name]}
        return sum(1 for path, rng, _ in self.server.log if path.rsplit("/", 1)[-1] in names and rng is None)

    def entries(self, name: str) -> list[Path]:
        folder = self.cache / name
        return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def demucs_entry(files: list[Path], **extra) -> dict:
    """A registry entry for demucs files, checked by the hash prefix in their names (torch.hub's rule)."""
    return {"family": "demucs", "arch": "stemsep.models.HTDemucs", "sources": SOURCES, "samplerate": 44100,
            "files": [{"url": f"{ORIGIN}/{p.name}", "sha256_prefix": p.stem.rsplit("-", 1)[1]} for p in files],
            **extra}


def served_fixture():
    """:func:`serve_models` as a fixture: ``served = served_fixture()`` in a test module."""

    @pytest.fixture
    def served(tmp_path, monkeypatch) -> Iterator[Served]:
        with serve_models(tmp_path, monkeypatch) as models:
            yield models

    return served


def cli_error(argv: list[str], capsys) -> str:
    """``stemsep ARGV`` that must fail: exit status 2 and one ``stemsep: error:`` line on stderr (returned)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stemsep: error: "), err
    return err[0]


@functools.cache
def _releases() -> Path:
    """The release files, written once per test process (removed at its exit)."""
    folder = Path(tempfile.mkdtemp(prefix="stemsep-releases-"))
    atexit.register(shutil.rmtree, folder, True)
    write_demucs_package(tiny_htdemucs(0), folder, "tinyhtd")
    members = [write_demucs_package(tiny_htdemucs(10 + i), folder, f"tinyft{i}") for i in range(4)]
    # as demucs/remote/htdemucs_ft.yaml: the members' signatures and per-source weights
    (folder / "tiny_ft.yaml").write_text(yaml.safe_dump({
        "models": [p.stem.split("-")[0] for p in members],
        "weights": [[float(i == j) for j in range(4)] for i in range(4)]}))
    write_msst(folder, "tinyroformer", seed=5)
    return folder


@contextlib.contextmanager
def serve_models(root: Path, monkeypatch) -> Iterator[Served]:
    """The tiny releases on a server, a registry naming them, the environment pointing at both:
    ``tiny_htdemucs`` (one demucs package), ``tiny_ft`` (a bag of four, per-source weights from its
    demucs bag YAML), ``tiny_roformer`` (MSST, full sha256) and ``tiny_roformer_unverified`` (no hash)."""
    folder, cache = root / "served", root / "cache"
    shutil.copytree(_releases(), folder)  # a private copy: tests add and edit files
    single = next(folder.glob("tinyhtd-*.th"))
    members = sorted(folder.glob("tinyft*-*.th"))
    bag = yaml.safe_load((folder / "tiny_ft.yaml").read_text())
    bag_files = [next(p for p in members if p.stem.split("-")[0] == sig) for sig in bag["models"]]
    ckpt, config = folder / "tinyroformer.ckpt", folder / "tinyroformer.yaml"
    roformer = {"family": "msst", "model_type": "bs_roformer", "arch": "stemsep.models.BSRoFormer",
                "config": str(config), "sources": SOURCES, "samplerate": 44100, "sdr": 1.5,
                "reported": "none: a test model", "license": "test"}
    models = {
        "tiny_htdemucs": demucs_entry([single], sdr=9.0, license="MIT (test)"),
        "tiny_ft": demucs_entry(bag_files, weights=bag["weights"]),
        "tiny_roformer": {**roformer, "files": [{"url": f"{ORIGIN}/{ckpt.name}", "sha256": sha256(ckpt)}]},
        "tiny_roformer_unverified": {**roformer, "files": [f"{ORIGIN}/{ckpt.name}"]},
    }
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "models": models}, sort_keys=False))
    monkeypatch.setenv("STEMSEP_REGISTRY", str(registry))
    monkeypatch.setenv("STEMSEP_CACHE", str(cache))
    monkeypatch.delenv("STEMSEP_OFFLINE", raising=False)
    monkeypatch.delenv("STEMSEP_TRUST_UNVERIFIED", raising=False)
    with ShardServer(folder) as server:
        monkeypatch.setenv("STEMSEP_MODEL_MIRROR", server.url)
        yield Served(folder, server, registry, cache, {"tiny_htdemucs": [single], "tiny_ft": bag_files,
                                                       "tiny_roformer": [ckpt], "tiny_roformer_unverified": [ckpt]})
