"""``TestResultWriter``: the per-track results of ``stemsep test``, written as ``stemsep score`` does.

At each test batch it scores every track of the batch (the module's ``test_metrics``, museval
v4) from the estimate ``SeparationModule.test_step`` returns; when the test ends it gathers the
records of all ranks (each track once, whatever the sampler repeated) and rank 0 writes the
per-track JSON/CSV and ``summary.json``/``summary.csv``, then prints the summary table and
``per-track results of N track(s) in DIR``.

Folder: ``dirpath``, else the module's ``test_results_dir`` (``--model.test_results_dir``), else
``<log dir>/test_results``. The ``stemsep`` LightningCLI lists it as the top-level
``test_results`` key (``test_results: null`` switches it off); a
:class:`~stemsep.training.SeparationModule` used from Python adds one when the trainer has none.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from stemsep.errors import StemsepError


class TestResultWriter(Callback):
    """Score every test track and write per-track and summary results.

    Args:
        dirpath: output folder (default: the module's ``test_results_dir``, else
            ``<log dir>/test_results``).
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath
        self.records: list[dict] = []

    def configured(self, pl_module: LightningModule) -> str | None:
        """``dirpath``, else the module's ``test_results_dir``; a one-line error if both are set and differ."""
        given = getattr(pl_module, "test_results_dir", None)
        if self.dirpath is not None and given is not None and Path(self.dirpath) != Path(given):
            raise StemsepError(f"test_results.init_args.dirpath {self.dirpath} and model.test_results_dir {given} "
                               "disagree: set one of them")
        return self.dirpath if self.dirpath is not None else given

    def folder(self, trainer: Trainer, pl_module: LightningModule) -> Path:
        """Where the results go (``trainer.log_dir`` is a collective call under DDP: ask on every rank)."""
        chosen = self.configured(pl_module)
        return Path(chosen) if chosen else Path(trainer.log_dir or trainer.default_root_dir) / "test_results"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "test":
            self.configured(pl_module)  # a disagreement stops before the evaluation, not after

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.records = []

    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        from stemsep.evaluation.results import evaluate_track

        if not isinstance(outputs, torch.Tensor):  # a module whose test_step returns no estimate
            return
        names = batch[2] if len(batch) > 2 else [f"track{batch_idx:05d}"]
        options = {"metrics": tuple(pl_module.test_metrics)} if hasattr(pl_module, "test_metrics") else {}
        for name, est, ref in zip(names, outputs, batch[1]):
            self.records.append(evaluate_track(str(name), list(pl_module.sources), est.cpu(), ref.cpu(),
                                               int(pl_module.net.samplerate), **options))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        records = gather_records(self.records, trainer.world_size)
        self.records = []
        out = self.folder(trainer, pl_module)
        if trainer.is_global_zero:
            write_test_results(records, out, pl_module.print)


def write_test_results(records: list[dict], out: Path, echo=print) -> None:
    """Per-track JSON/CSV and the summary in ``out``; ``echo`` the summary table and where it is."""
    from stemsep.evaluation.results import format_summary, summarize, write_summary, write_track_record

    for record in records:
        write_track_record(out, record)
    summary = summarize(records)
    write_summary(out, summary)
    echo(format_summary(summary))
    echo(f"per-track results of {len(records)} track(s) in {out}")


def gather_records(records: list[dict], world_size: int) -> list[dict]:
    """All ranks' per-track records, one per track name (samplers may repeat tracks), sorted."""
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[dict] | None] = [None] * world_size
        torch.distributed.all_gather_object(gathered, records)
        records = [record for part in gathered for record in (part or [])]
    return sorted({record["name"]: record for record in records}.values(), key=lambda r: r["name"])
