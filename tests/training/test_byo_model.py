"""A user's own network trains through the quickstart recipe (acceptance: bring your own model)."""

import torch
from torch import nn

from helpers import REPO
from stemsep.cli import main
from stemsep.io.checkpoint import load_separator


class MyNet(nn.Module):
    """A network defined here, known to stemsep only through the recipe's class_path."""

    def __init__(self, sources: list[str] | None = None, audio_channels: int = 2, samplerate: int = 44100,
                 width: int = 6):
        super().__init__()
        self.sources = list(sources or ["drums", "bass", "other", "vocals"])
        self.audio_channels, self.samplerate = audio_channels, samplerate
        self.mask = nn.Sequential(nn.Conv1d(audio_channels, width, 5, padding=2), nn.ReLU(),
                                  nn.Conv1d(width, len(self.sources) * audio_channels, 5, padding=2))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        b, c, t = mix.shape
        return torch.sigmoid(self.mask(mix)).view(b, -1, c, t) * mix[:, None]


def test_quickstart_trains_a_user_network(corpus_root, tmp_path, capsys):
    code = main(["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"),
                 "--model.net.class_path", f"{__name__}.MyNet",
                 "--model.net.init_args.width", "4",
                 "--data.init_args.prepare.root", str(corpus_root),
                 "--data.init_args.prepare.out", str(tmp_path / "shards"), "--data.init_args.segment", "0.5",
                 "--data.init_args.epoch_batches", "2", "--data.init_args.num_workers", "0",
                 "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path)])
    assert code == 0
    assert "valid nSDR (dB) epoch 0: drums" in capsys.readouterr().out
    ckpt = next(tmp_path.rglob("*.ckpt"))
    net = load_separator(ckpt)
    assert isinstance(net, MyNet) and net.mask[0].out_channels == 4
