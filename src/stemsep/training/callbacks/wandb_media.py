"""``WandbMedia``: listen to and look at the separation of a fixed excerpt at every validation.

At the end of each validation (not the sanity check) it logs to the trainer's
:class:`~lightning.pytorch.loggers.WandbLogger`:

- ``media/audio``: the mixture and the estimate of each source on a fixed excerpt
  (``offset`` .. ``offset + seconds``) of the first validation song;
- ``media/spectrograms``: one picture, references (left) vs estimates (right), one row per
  source, built with numpy (:mod:`stemsep.training.callbacks.spectrogram`);
- ``media/sdr``: a table, one row per source: the SDR of the excerpt and the validation nSDR.

The estimate is made right after the first validation batch, with the weights being validated
(EMA weights when :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` is on). It works
offline (``WANDB_MODE=offline``), does nothing on non-zero ranks or when no W&B logger is
configured (``--trainer.logger=false`` or ``null``, CSV, TensorBoard), and never stops training: any
error becomes a warning and this validation's media are skipped.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from stemsep.evaluation.metrics import nsdr
from stemsep.training.callbacks.spectrogram import spectrogram_grid


def wandb_logger(trainer: Trainer):
    """The trainer's W&B logger, or ``None``."""
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - wandb extra missing
        return None
    return next((logger for logger in trainer.loggers if isinstance(logger, WandbLogger)), None)


class WandbMedia(Callback):
    """Log audio, spectrograms and a per-source SDR table of one excerpt at validation end.

    Args:
        seconds: excerpt length (cut short by the song's end).
        offset: excerpt start in the first validation song, seconds (clamped so the excerpt fits).
        every_n_epochs: log at validations of epochs divisible by this.
        n_fft / hop: STFT of the spectrogram pictures.
    """

    def __init__(self, seconds: float = 6.0, offset: float = 10.0, every_n_epochs: int = 1,
                 n_fft: int = 512, hop: int = 256):
        if seconds <= 0 or offset < 0 or every_n_epochs < 1:
            raise ValueError("WandbMedia: seconds must be > 0, offset >= 0 and every_n_epochs >= 1")
        self.seconds, self.offset, self.every_n_epochs = float(seconds), float(offset), int(every_n_epochs)
        self.n_fft, self.hop = int(n_fft), int(hop)
        self._excerpt: dict | None = None

    def _wanted(self, trainer: Trainer) -> bool:
        return (trainer.is_global_zero and not trainer.sanity_checking
                and trainer.current_epoch % self.every_n_epochs == 0 and wandb_logger(trainer) is not None)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._excerpt = None

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or not self._wanted(trainer):
            return
        try:
            self._excerpt = self._separate_excerpt(pl_module, batch)
        except Exception as err:  # noqa: BLE001 - media must never stop training
            rank_zero_warn(f"WandbMedia: no media this validation ({type(err).__name__}: {err})")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        excerpt, self._excerpt = self._excerpt, None
        if excerpt is None or not self._wanted(trainer):
            return
        try:
            self._log(trainer, excerpt)
        except Exception as err:  # noqa: BLE001 - media must never stop training
            rank_zero_warn(f"WandbMedia: could not log media ({type(err).__name__}: {err})")

    @torch.no_grad()
    def _separate_excerpt(self, pl_module: LightningModule, batch) -> dict:
        mix, stems = batch[0][:1], batch[1][:1]
        samplerate = int(pl_module.net.samplerate)
        length = min(int(self.seconds * samplerate), mix.shape[-1])
        start = max(0, min(int(self.offset * samplerate), mix.shape[-1] - length))
        mix, stems = mix[..., start:start + length], stems[..., start:start + length]
        estimate = pl_module.separate(mix)
        return {"mix": mix[0].float().cpu(), "stems": stems[0].float().cpu(), "estimate": estimate[0].float().cpu(),
                "samplerate": samplerate, "sources": list(pl_module.sources), "start": start / samplerate}

    def _log(self, trainer: Trainer, excerpt: dict) -> None:
        import wandb

        sources, samplerate = excerpt["sources"], excerpt["samplerate"]
        where = f"epoch {trainer.current_epoch}, {excerpt['start']:.1f}s"

        def audio(wav: torch.Tensor, caption: str):
            return wandb.Audio(wav.clamp(-1, 1).T.numpy(), sample_rate=samplerate, caption=f"{caption} ({where})")

        sdr = nsdr(excerpt["estimate"], excerpt["stems"]).tolist()
        metrics = trainer.callback_metrics
        rows = [[trainer.current_epoch, name, float(value),
                 float(metrics[f"valid/nsdr_{name}"]) if f"valid/nsdr_{name}" in metrics else float("nan")]
                for name, value in zip(sources, sdr)]
        picture = spectrogram_grid(excerpt["stems"].numpy(), excerpt["estimate"].numpy(), n_fft=self.n_fft,
                                   hop=self.hop)
        media = {
            "media/audio": [audio(excerpt["mix"], "mixture")]
                           + [audio(est, name) for name, est in zip(sources, excerpt["estimate"])],
            "media/spectrograms": wandb.Image(np.asarray(picture), caption="rows: " + ", ".join(sources)
                                              + "; left: reference, right: estimate; " + where),
            "media/sdr": wandb.Table(columns=["epoch", "source", "excerpt_sdr", "valid_nsdr"], data=rows),
        }
        wandb_logger(trainer).log_metrics(media, step=trainer.global_step)
