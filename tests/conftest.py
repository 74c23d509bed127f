"""Shared fixtures: a small synthetic corpus and its shards. Helpers live in tests/helpers/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.data import shard_corpus
from stemsep.data.corpus.synth import generate_corpus


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    """4 train + 2 test synthetic songs of 3 s (read-only: copy before modifying)."""
    return generate_corpus(tmp_path_factory.mktemp("corpus"), songs=4, seconds=3.0, seed=0, test_songs=2)


@pytest.fixture(scope="session")
def shards(corpus_root, tmp_path_factory) -> Path:
    """``corpus_root`` packed into 1 MB WebDataset shards (read-only: copy before modifying)."""
    return shard_corpus(corpus_root, tmp_path_factory.mktemp("shards"))


@pytest.fixture
def corpus_copy(corpus_root, tmp_path) -> Path:
    """A private, modifiable copy of the synthetic corpus."""
    return Path(shutil.copytree(corpus_root, tmp_path / "corpus"))


@pytest.fixture(scope="module")
def causal_ckpt(tmp_path_factory):
    """The stream tests' causal network: ``(tiny stereo HS-TasNet at 8 kHz, hop 32, latency 63; its checkpoint)``."""
    from helpers.live import checkpoint, tiny_hstasnet

    net = tiny_hstasnet()
    return net, checkpoint(net, tmp_path_factory.mktemp("stream") / "hs.ckpt")


@pytest.fixture(scope="module")
def windowed_ckpt(tmp_path_factory):
    """The stream tests' windowed network: ``(TinyNet with a 0.05 s segment; its checkpoint)``."""
    from helpers.live import checkpoint, tiny_windowed

    net = tiny_windowed()
    return net, checkpoint(net, tmp_path_factory.mktemp("stream") / "tiny.ckpt")
