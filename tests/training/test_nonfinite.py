"""Non-finite guard: NaN/Inf steps are skipped (weights and optimizer state untouched) and counted;
N in a row write a checkpoint and stop with a one-line error."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import TinyNet
from stemsep.errors import StemsepError
from stemsep.io.checkpoint import load_checkpoint
from stemsep.training.module import SeparationModule


class SometimesNaN(TinyNet):
    """TinyNet whose output (hence loss and gradients) is NaN on the chosen training calls."""

    def __init__(self, bad_calls: set[int] | None = None, bad_from: int | None = None, inf_grad: bool = False):
        super().__init__()
        self.bad_calls, self.bad_from, self.inf_grad, self.calls = set(bad_calls or ()), bad_from, inf_grad, 0

    def forward(self, mix):
        out = super().forward(mix)
        if not self.training:
            return out
        call, self.calls = self.calls, self.calls + 1
        if call in self.bad_calls or (self.bad_from is not None and call >= self.bad_from):
            if self.inf_grad:  # finite loss, infinite gradient
                return _InfGrad.apply(out)
            return out * float("nan")
        return out


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


class Snapshots(L.Callback):
    """Weights and Adam step counts after every optimizer step (batch end)."""

    def __init__(self):
        self.weights, self.steps = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({k: v.clone() for k, v in pl_module.net.state_dict().items()})
        state = trainer.optimizers[0].state
        self.steps.append([int(state[p]["step"]) if p in state else 0 for p in pl_module.net.parameters()])


def _loader(batches: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    stems = torch.randn(batches * 2, 4, 2, 512, generator=g) * 0.1
    return DataLoader(TensorDataset(stems.sum(1), stems), batch_size=2)


def _trainer(tmp_path, steps: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                     enable_checkpointing=False)


@pytest.mark.parametrize("inf_grad", [False, True], ids=["nan_loss", "inf_gradient"])
def test_non_finite_step_is_skipped_and_counted(tmp_path, inf_grad):
    torch.manual_seed(0)
    net = SometimesNaN(bad_calls={2, 3}, inf_grad=inf_grad)
    module = SeparationModule(net, max_nonfinite_steps=3)
    snaps = Snapshots()
    trainer = _trainer(tmp_path, 6, [snaps])
    with pytest.warns(UserWarning, match=r"non-finite (loss|gradient of net\.body\.\d\.\w+) at step 2: optimizer step "
                                         r"skipped \(1 in a row, 1 in total\)"):
        trainer.fit(module, _loader())
    assert trainer.global_step == 6
    assert trainer.callback_metrics["train/nonfinite_skipped"] == 2
    w = snaps.weights
    for skipped in (2, 3):  # weights after the bad steps equal those before: no momentum drift
        assert all(torch.equal(w[skipped][k], w[skipped - 1][k]) for k in w[0])
    assert not all(torch.equal(w[4][k], w[3][k]) for k in w[0])  # training resumed
    assert snaps.steps[1][0] == 2 and snaps.steps[3][0] == 2 and snaps.steps[4][0] == 3  # Adam state untouched
    assert all(torch.isfinite(v).all() for v in w[-1].values())


def test_too_many_in_a_row_checkpoint_then_stop(tmp_path):
    torch.manual_seed(0)
    module = SeparationModule(SometimesNaN(bad_from=2), max_nonfinite_steps=3)
    trainer = _trainer(tmp_path, 20)
    with pytest.warns(UserWarning, match="non-finite"), pytest.raises(StemsepError) as err:
        trainer.fit(module, _loader())
    message = str(err.value)
    assert "3 steps in a row" in message and "max_nonfinite_steps=3" in message and "\n" not in message
    path = tmp_path / "checkpoints" / "nonfinite-step=4.ckpt"
    assert str(path) in message and path.is_file()
    ckpt = load_checkpoint(path)  # loads with weights_only=True
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    # the saved weights are the last good ones (after step 2, the skipped steps changed nothing)
    assert all(torch.equal(ckpt["state_dict"][f"net.{k}"], v) for k, v in module.net.state_dict().items())


def test_guard_can_be_disabled_and_is_validated():
    from stemsep.training.callbacks.nonfinite import NonFiniteGuard

    callbacks = SeparationModule(TinyNet(), max_nonfinite_steps=None).configure_callbacks()
    assert not any(isinstance(c, NonFiniteGuard) for c in callbacks)
    with pytest.raises(StemsepError, match="max_nonfinite_steps"):
        SeparationModule(TinyNet(), max_nonfinite_steps=0).configure_callbacks()
