"""``SeparationModule``: the one LightningModule, wrapping any separation network.

The network contract: an ``nn.Module`` with attributes ``sources: list[str]``,
``samplerate: int``, ``audio_channels: int`` and ``forward(mix)`` mapping
``(batch, channels, time)`` to ``(batch, sources, channels, time)``. The module owns the
loss, the optimizer and LR schedule, validation nSDR (and the community's metrics a recipe names in
``model.metrics``) and logging; it knows nothing about any specific architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from stemsep.contract import check_network, network_config
from stemsep.errors import StemsepError
from stemsep.evaluation.community import CommunityMetrics, check_community_metrics
from stemsep.evaluation.metrics import NSDR
from stemsep.inference import optimize_for_cpu, restore_plain
from stemsep.io.checkpoint import load_checkpoint
from stemsep.io.weights import load_weights, net_state_dict
from stemsep.training.lora import CHECKPOINT_KEY as LORA_CHECKPOINT_KEY
from stemsep.training.lora import LoRA, is_adapter_key
from stemsep.training.lora import check_base as lora_check_base
from stemsep.training.lora import inject as lora_inject
from stemsep.training.lora import load_base_weights as lora_load_base
from stemsep.training.lora import open_base as lora_open_base
from stemsep.training.sparse_dropout import apply_sparse_dropout, remove_sparse_dropout

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


EVAL_OPTIONS = ["eval_segment", "eval_overlap", "test_metrics", "test_results_dir", "metrics"]

# Set by the stemsep LightningCLI (stemsep.training.cli) while it builds the classes of a config.
_BUILDING_FROM_CONFIG: ContextVar[bool] = ContextVar("stemsep_building_from_config", default=False)


@contextmanager
def building_from_config() -> Iterator[None]:
    """While active, a ``SeparationModule`` is built by the ``stemsep`` LightningCLI from a config.

    Its hyperparameters are then the plain config (LightningCLI hands it to
    ``save_hyperparameters``), and its guards and test-result writer are those the config lists
    (``guards``, ``test_results``): ``configure_callbacks`` adds none.
    """
    token = _BUILDING_FROM_CONFIG.set(True)
    try:
        yield
    finally:
        _BUILDING_FROM_CONFIG.reset(token)


def default_optimizer(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam, lr 3e-4, as demucs and the HT Demucs paper train."""
    return torch.optim.Adam(params, lr=3e-4, betas=(0.9, 0.999))


class SeparationModule(L.LightningModule):
    """Trains and evaluates any separation network.

    Args:
        net: the separation network (see the module docstring for its contract).
        loss: a criterion called as ``loss(estimate, reference)`` on one source at a time,
            ``(batch, channels, time)`` each (e.g. ``torch.nn.L1Loss`` — the default — or
            ``auraloss.freq.MultiResolutionSTFTLoss``).
        optimizer: a callable building the optimizer from the parameters (LightningCLI:
            ``optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 3e-4}}``).
        scheduler: optional callable building an LR scheduler, stepped every optimizer step.
        source_weights: per-source loss weights (e.g. ``[0, 0, 0, 1]`` to fine-tune on vocals);
            default equal weights.
        init_from: a stemsep checkpoint whose network weights initialise ``net`` before
            training (weights only: optimizer and step count start fresh; use ``--ckpt_path``
            to resume a run).
        eval_segment: segment (seconds) for chunked full-track validation/test separation;
            default the network's own ``segment`` attribute, else the whole track.
        eval_overlap: overlap between chunks in validation/test.
        test_metrics: metrics computed per track by ``stemsep test``: museval v4's framewise
            ``sdr``/``isr``/``sir``/``sar`` and any of the community's (as ``stemsep score --metrics``).
        metrics: the community's (MSST's) whole-track metrics computed at every validation, on the
            device, for whole batches (:mod:`stemsep.evaluation.community`: ``usdr``, ``si_sdr``,
            ``l1_freq``, ``log_wmse``, ``aura_stft``, ``aura_mrstft``, ``bleedless``, ``fullness``);
            each is logged as ``valid/<name>`` (mean over sources, e.g. ``ModelCheckpoint(monitor=
            "valid/usdr", mode="max")``) and ``valid/<name>_<source>``, averaged over the tracks.
        test_results_dir: where ``stemsep test`` writes per-track JSON/CSV and the summary,
            as ``stemsep score`` does (default ``<log dir>/test_results``); read by
            :class:`~stemsep.training.callbacks.TestResultWriter` when its own ``dirpath`` is unset.
        max_nonfinite_steps: optimizer steps with a NaN/Inf loss or gradient are skipped and
            counted (:class:`~stemsep.training.callbacks.NonFiniteGuard`); this many in a row write a
            checkpoint and stop with an error. ``None`` disables the guard.
        lora: LoRA fine-tuning (``{r, alpha, target_modules, dropout}``, :mod:`stemsep.training.lora`;
            needs ``peft``): adapters are added to the named layers of ``net`` and only they train;
            ``init_from`` (required) is the base checkpoint, loaded in every run, resumed ones
            included; checkpoints hold the adapters and the base's path and sha256
            (``stemsep merge-lora`` writes the merged network).

    Callbacks: from Python, :meth:`configure_callbacks` adds a ``LoggerGuard``, a
    ``NonFiniteGuard(max_nonfinite_steps)`` and a ``TestResultWriter`` unless the trainer already
    has one of that type. The ``stemsep`` CLI lists them in the config instead (``guards.logger``,
    ``guards.nonfinite``, ``test_results``; ``null`` switches one off) and the module adds none.
    The module does not look at the data: the data follows the network (``stemsep fit`` links the
    data's sources, segment and sample rate to ``net``'s, :mod:`stemsep.training.linking`; from
    Python, ``StemDataModule.follow_network(net)``).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory = default_optimizer,
        scheduler: SchedulerFactory | None = None,
        source_weights: Sequence[float] | None = None,
        init_from: str | None = None,
        eval_segment: float | None = None,
        eval_overlap: float = 0.25,
        test_metrics: Sequence[str] = ("sdr", "isr", "sir", "sar"),
        test_results_dir: str | None = None,
        metrics: Sequence[str] = (),
        max_nonfinite_steps: int | None = 10,
        lora: LoRA | None = None,
    ):
        super().__init__()
        check_network(net)
        # Evaluation settings are not stored: LightningCLI lets a checkpoint's hyperparameters
        # override the command line, and `stemsep test --model.test_results_dir ...` must win.
        self.callbacks_from_config = _BUILDING_FROM_CONFIG.get()
        if self.callbacks_from_config:  # built by the stemsep LightningCLI: hparams are the plain config
            self.save_hyperparameters(ignore=EVAL_OPTIONS)
        else:  # built in Python: keep plain values, describe the network by class and init args
            self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "lora", *EVAL_OPTIONS])
            self.hparams["net"] = network_config(net)
            self.hparams["lora"] = None if lora is None else LoRA.of(lora).as_dict()
        self.net = net
        self.lora = None if lora is None else LoRA.of(lora)
        self.lora_base: dict[str, str] | None = None  # the base checkpoint's reference, once loaded
        if self.lora is not None:
            if not init_from:
                raise StemsepError("model.lora needs model.init_from: the base checkpoint the adapters are trained on")
            lora_inject(self.net, self.lora)
        self.loss = loss if loss is not None else nn.L1Loss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.sources = list(net.sources)
        weights = [1.0] * len(self.sources) if source_weights is None else [float(w) for w in source_weights]
        if len(weights) != len(self.sources) or sum(weights) <= 0:
            raise StemsepError(f"source_weights {list(weights)} must give one non-negative weight per source "
                               f"{self.sources}, not all zero")
        self.register_buffer("source_weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.init_from = init_from
        self.eval_segment = eval_segment
        self.eval_overlap = eval_overlap
        self.valid_nsdr = NSDR(len(self.sources))
        self.test_nsdr = NSDR(len(self.sources))
        self.test_metrics = tuple(test_metrics)
        self.test_results_dir = test_results_dir
        self.metrics = check_community_metrics(metrics, origin="model.metrics")
        self.valid_community = CommunityMetrics(self.metrics, len(self.sources)) if self.metrics else None
        if max_nonfinite_steps is not None and max_nonfinite_steps < 1:
            raise StemsepError(f"max_nonfinite_steps must be >= 1 or null, got {max_nonfinite_steps}")
        self.max_nonfinite_steps = max_nonfinite_steps

    # ----------------------------------------------------------------- network
    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.net(mix)

    def separate(self, mix: torch.Tensor) -> torch.Tensor:
        """Full-track separation with chunked overlap-add (validation, test, predict)."""
        from stemsep.inference.chunked import apply_model

        return apply_model(self.net, mix, segment=self.eval_segment, overlap=self.eval_overlap)

    def setup(self, stage: str) -> None:
        if self.lora is not None:  # the base weights, in every run: adapters alone are no model
            self.load_lora_base()
        elif stage == "fit" and self.init_from and getattr(self.trainer, "ckpt_path", None) is None:
            ckpt = load_checkpoint(self.init_from)
            load_weights(self.net, net_state_dict(ckpt), origin=self.init_from)
            rank_zero_info(f"stemsep: initialised network weights from {self.init_from}")

    def count_parameters(self, trainable_only: bool) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad or not trainable_only)

    # -------------------------------------------------------------------- LoRA
    def load_lora_base(self) -> None:
        """Load the base weights of a LoRA run from ``init_from`` (once) and record its sha256."""
        if self.lora is None or self.lora_base is not None:
            return
        with lora_open_base(self.init_from) as (self.lora_base, file):  # a URL read once
            ckpt = load_checkpoint(file)
        lora_load_base(self.net, net_state_dict(ckpt), origin=self.init_from)
        rank_zero_info(f"stemsep: LoRA on base {self.init_from}: {self.count_parameters(True):,} trainable "
                       f"parameters (adapters) of {self.count_parameters(False):,}")

    def _base_keys(self) -> list[str]:
        return [k for k in self.state_dict() if k.startswith("net.") and not is_adapter_key(k)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """With LoRA: keep the adapters only (and a reference to the base) in the checkpoint."""
        if self.lora is None:
            return
        base = set(self._base_keys())
        for key in ("state_dict", "current_model_state"):  # the latter: EMAWeightAveraging's copy
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = {k: v for k, v in checkpoint[key].items() if k not in base}
        checkpoint[LORA_CHECKPOINT_KEY] = {"base": self.lora_base, "lora": self.lora.as_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """With LoRA: check the base is the one the adapters were trained on; put its weights back for loading."""
        if self.lora is None or LORA_CHECKPOINT_KEY not in checkpoint:
            return
        self.load_lora_base()  # already done by setup in a trainer run
        lora_check_base(checkpoint[LORA_CHECKPOINT_KEY]["base"], self.init_from, self.lora_base["sha256"],
                        origin="checkpoint")
        own = self.state_dict()
        for key in ("state_dict", "current_model_state"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint[key] = {**{k: own[k] for k in self._base_keys()}, **checkpoint[key]}

    # ---------------------------------------------------------------- training
    def source_losses(self, estimate: torch.Tensor, stems: torch.Tensor) -> torch.Tensor:
        """Loss of each source, ``(sources,)``."""
        return torch.stack([self.loss(estimate[:, i], stems[:, i]) for i in range(len(self.sources))])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        mix, stems = batch[0], batch[1]
        estimate = self.net(mix)
        if estimate.shape != stems.shape:
            raise StemsepError(f"network output {tuple(estimate.shape)} does not match the targets "
                               f"{tuple(stems.shape)} (batch, sources, channels, time)")
        losses = self.source_losses(estimate, stems)
        loss = (losses * self.source_weights).sum()
        batch_size = mix.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in zip(self.sources, losses.detach()):
            self.log(f"train/loss_{name}", value, batch_size=batch_size)
        return loss

    def on_fit_start(self) -> None:
        """On CPU, attention dropout is drawn sparsely while fitting (:mod:`stemsep.training.sparse_dropout`)."""
        if self.device.type == "cpu":
            apply_sparse_dropout(self.net)

    def on_fit_end(self) -> None:
        remove_sparse_dropout(self.net)

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch, metric: NSDR, prefix: str) -> torch.Tensor:
        mix, stems = batch[0], batch[1]
        estimate = self.separate(mix)
        metric.update(estimate, stems)
        self.log(f"{prefix}/loss", (self.source_losses(estimate, stems) * self.source_weights).sum(),
                 batch_size=mix.shape[0], sync_dist=True)
        return estimate

    def validation_step(self, batch, batch_idx: int) -> None:
        estimate = self._evaluate(batch, self.valid_nsdr, "valid")
        if self.valid_community is not None:  # the whole batch at once, on the device
            self.valid_community.update(estimate, batch[1], batch[0], int(self.net.samplerate))

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """The estimate of each track: ``TestResultWriter`` scores and writes them."""
        return self._evaluate(batch, self.test_nsdr, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_nsdr(self.valid_nsdr, "valid")
        if self.valid_community is not None:
            self._log_community(self.valid_community, "valid")

    def on_test_start(self) -> None:
        """On CPU, ``stemsep test`` separates with the CPU inference rewrites (same weights and values
        up to float rounding, as ``stemsep separate``); :meth:`on_test_end` restores the plain modules."""
        if self.device.type == "cpu":
            optimize_for_cpu(self.net)

    def on_test_end(self) -> None:
        restore_plain(self.net)

    def on_test_epoch_end(self) -> None:
        self._log_nsdr(self.test_nsdr, "test")

    def _log_nsdr(self, metric: NSDR, prefix: str) -> None:
        values = metric.compute().reshape(-1)  # torchmetrics squeezes one source's (1,) to a scalar
        metric.reset()
        for name, value in zip(self.sources, values):
            self.log(f"{prefix}/nsdr_{name}", value)
        self.log(f"{prefix}/nsdr", values.mean(), prog_bar=True)
        if not self.trainer.sanity_checking:
            table = "  ".join(f"{name} {value:.2f}" for name, value in zip(self.sources, values.tolist()))
            self.print(f"{prefix} nSDR (dB) epoch {self.current_epoch}: {table}  mean {values.mean():.2f}")

    def _log_community(self, metric: CommunityMetrics, prefix: str) -> None:
        """``<prefix>/<name>`` (mean over sources) and ``<prefix>/<name>_<source>``, each averaged over tracks."""
        values = metric.compute()
        metric.reset()
        values = {name: per_source.reshape(-1) for name, per_source in values.items()}  # one source: squeezed
        for name, per_source in values.items():
            for source, value in zip(self.sources, per_source):
                self.log(f"{prefix}/{name}_{source}", value)
            self.log(f"{prefix}/{name}", per_source.mean())
        if not self.trainer.sanity_checking:
            table = "  ".join(f"{name} {per_source.mean():.3f}" for name, per_source in values.items())
            self.print(f"{prefix} epoch {self.current_epoch} (mean over sources): {table}")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        mix = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.separate(mix)

    # -------------------------------------------------------------- optimizers
    def configure_callbacks(self):
        """Default callbacks for Python use, each only if the trainer has none of its type.

        ``LoggerGuard`` (failing loggers warn), ``NonFiniteGuard(max_nonfinite_steps)`` (NaN/Inf
        steps are skipped; none if ``max_nonfinite_steps`` is ``None``) and ``TestResultWriter``
        (per-track results of ``trainer.test``). None when the ``stemsep`` CLI built the module:
        its config lists them (``guards``, ``test_results``), and ``null`` there means off.
        """
        from stemsep.training.callbacks import LoggerGuard, NonFiniteGuard, TestResultWriter

        if self.callbacks_from_config:
            return []
        try:
            present = list(self.trainer.callbacks)
        except RuntimeError:  # not attached to a trainer
            present = []
        defaults = [LoggerGuard(), TestResultWriter()]
        if self.max_nonfinite_steps is not None:
            defaults.insert(1, NonFiniteGuard(self.max_nonfinite_steps))
        return [callback for callback in defaults if not any(isinstance(c, type(callback)) for c in present)]

    def configure_optimizers(self):
        params = self.net.parameters()
        if self.lora is not None:  # the adapters only
            params = [p for p in params if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
