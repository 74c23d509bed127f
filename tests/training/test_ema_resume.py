"""EMA through Lightning's EMAWeightAveraging: checkpoints hold the averaged weights; a resumed
run (``--ckpt_path``) continues the step count and the average."""

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint

from helpers import TinyNet
from stemsep.data.loaders.folder import FolderDataModule
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.training.module import SeparationModule

DECAY = 0.5  # far from 1 so that the average differs clearly from the last weights


class RecordWeights(Callback):
    """The network's weights after every optimizer step, and how many steps ran."""

    def __init__(self):
        self.weights, self.steps = [], 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1
        self.weights.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})


def _fit(root, corpus_root, max_steps, ckpt_path=None):
    L.seed_everything(0)
    data = FolderDataModule(str(corpus_root), segment=0.5, batch_size=2, epoch_size=8, valid_split="test")
    module = SeparationModule(TinyNet(), optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    # Record first: EMAWeightAveraging updates its average in the same hook, after us.
    record = RecordWeights()
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, default_root_dir=root,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[record, EMAWeightAveraging(decay=DECAY),
                                   ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)])
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer, record


def _ema(history, start=None):
    average = start
    for weights in history:
        average = dict(weights) if average is None else {
            k: DECAY * average[k] + (1 - DECAY) * weights[k] for k in average}
    return average


def test_ema_checkpoint_holds_averaged_weights_and_resume_continues(corpus_root, tmp_path):
    trainer, record = _fit(tmp_path, corpus_root, max_steps=3)
    assert trainer.global_step == 3 and record.steps == 3
    ckpt_file = tmp_path / "last.ckpt"
    ckpt = load_checkpoint(ckpt_file)  # weights_only: still no pickled objects
    expected = _ema(record.weights)
    saved = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    current = {k[len("net."):]: v for k, v in ckpt["current_model_state"].items() if k.startswith("net.")}
    for name, value in expected.items():
        assert torch.allclose(saved[name], value, atol=1e-6), name
        assert torch.allclose(current[name], record.weights[-1][name], atol=1e-7), name
    assert any(not torch.allclose(saved[n], current[n]) for n in saved)  # averaged != last weights
    # What separate/bag/init_from load is the averaged network.
    net = load_separator(ckpt_file)
    for name, value in net.state_dict().items():
        assert torch.allclose(value, expected[name], atol=1e-6)

    # Resume: the step count continues from 3 (two more steps, not five), and so does the average.
    resumed, record2 = _fit(tmp_path / "resumed", corpus_root, max_steps=5, ckpt_path=str(ckpt_file))
    assert resumed.global_step == 5 and record2.steps == 2
    final = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert final["global_step"] == 5
    continued = _ema(record2.weights, start=expected)
    for name, value in continued.items():
        assert torch.allclose(final["state_dict"][f"net.{name}"], value, atol=1e-6), name
