"""A Lightning callback for equal-budget training (benchmarks/equal_budget.py): stop after a CPU-time budget.

``CPUBudget(budget=150)`` measures the training process's CPU time (``resource.getrusage``
user + system, all its threads) from ``on_train_start``, so imports, corpus preparation and model
construction are not counted; the data-loading worker (another process) is not counted either.
Once the budget is spent it sets ``trainer.should_stop``: Lightning then runs validation once and
ends the fit. The learning rate follows the same budget instead of a step count: a linear warm-up
to each parameter group's initial ``lr`` over the first ``warmup`` fraction of the CPU budget,
then a cosine to zero at the end of it (OneCycleLR's shape on CPU seconds), so every network gets
the same schedule whatever its step time. After validation (the module has logged its metrics by then) it writes a JSON summary
(steps, CPU seconds, parameters, per-source valid nSDR) to ``report``.

Used on the command line as
    PYTHONPATH=benchmarks stemsep fit ... --trainer.callbacks+=cpu_budget.CPUBudget \
        --trainer.callbacks.budget 150 --trainer.callbacks.report out.json
"""

from __future__ import annotations

import json
import math
import os
import resource

import lightning.pytorch as pl


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CPUBudget(pl.Callback):
    def __init__(self, budget: float = 150.0, warmup: float = 0.2, report: str | None = None):
        if budget <= 0 or not 0 <= warmup < 1:
            raise ValueError(f"CPUBudget: budget {budget} must be > 0 and warmup {warmup} in [0, 1)")
        self.budget = float(budget)
        self.warmup = float(warmup)
        self.report = report
        self.start = 0.0
        self.used = 0.0
        self.steps = 0
        self.base_lrs: list[list[float]] = []

    def factor(self, fraction: float) -> float:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < self.warmup:
            return max(fraction / self.warmup, 1e-3)
        rest = (fraction - self.warmup) / (1.0 - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * rest))

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = process_cpu_seconds()
        self.base_lrs = [[group["lr"] for group in opt.param_groups] for opt in trainer.optimizers]
        self._set_lr(trainer, 0.0)

    def _set_lr(self, trainer, fraction: float) -> None:
        scale = self.factor(fraction)
        for opt, lrs in zip(trainer.optimizers, self.base_lrs):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * scale

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        self.used = process_cpu_seconds() - self.start
        if self.used >= self.budget:
            trainer.should_stop = True
        else:
            self._set_lr(trainer, self.used / self.budget)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.report:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("valid/nsdr")}
        summary = {
            "steps": self.steps,
            "train_cpu_seconds": round(self.used, 2),
            "budget": self.budget,
            "parameters": sum(p.numel() for p in pl_module.net.parameters()),
            "network": type(pl_module.net).__name__,
            "nsdr": {k.removeprefix("valid/nsdr_"): v for k, v in metrics.items() if k != "valid/nsdr"},
            "nsdr_mean": metrics.get("valid/nsdr"),
        }
        tmp = f"{self.report}.tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, self.report)
