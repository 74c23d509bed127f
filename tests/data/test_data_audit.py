"""`stemsep audit`: silence filter from the manifest, bleeding matrix with a model."""

from __future__ import annotations

import json

import torch
from torch import nn

from helpers.data import shard_corpus
from stemsep.cli import main
from stemsep.data.shards.audit import bleed_matrix
from stemsep.io.audio import read_audio, write_audio


def test_silent_stem_is_dropped_and_keep_list_is_written(corpus_copy, tmp_path):
    song = corpus_copy / "train" / "song0001"
    wav, _ = read_audio(song / "vocals.wav")
    write_audio(song / "vocals.wav", wav * 0.001, 44100)  # -60 dB: "silent"
    out = shard_corpus(corpus_copy, tmp_path / "shards", splits=["train"])
    keep = tmp_path / "keep.json"
    assert main(["audit", "--shards", str(out / "train.json"), "--out", str(keep)]) == 0
    result = json.loads(keep.read_text())
    assert result["keep"] == ["song0000", "song0002", "song0003"]
    assert "vocals silent" in result["drop"]["song0001"]


class _Oracle(nn.Module):
    """Returns its input in the source it was taken from (a perfect separator for lone stems)."""

    def __init__(self, stems: torch.Tensor, leak: float = 0.0):
        super().__init__()
        self.stems, self.leak, self.sources = stems, leak, ["a", "b"]

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(mix.shape[0], 2, *mix.shape[1:])
        for b in range(mix.shape[0]):
            own = int(torch.argmin(torch.stack([(mix[b] - s).abs().sum() for s in self.stems])))
            out[b, own] = mix[b]
            out[b, 1 - own] = self.leak * mix[b]
        return out


def test_bleed_matrix_measures_leakage():
    stems = torch.randn(2, 2, 3 * 8000) * 0.1
    clean = bleed_matrix(_Oracle(stems), stems, 8000)
    assert torch.equal(clean, torch.eye(2))
    leaky = bleed_matrix(_Oracle(stems, leak=0.5), stems, 8000)  # -6 dB copy > -10 dB threshold
    assert torch.equal(leaky, torch.ones(2, 2))
