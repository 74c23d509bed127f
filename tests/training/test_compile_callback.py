"""CompileNetwork: torch.compile of the network in place, checkpoints keep plain parameter names."""

import lightning as L
import torch

from helpers import TinyNet
from stemsep.data.loaders.folder import FolderDataModule
from stemsep.io.checkpoint import load_checkpoint
from stemsep.training.callbacks import CompileNetwork
from stemsep.training.module import SeparationModule


def test_compiled_training_keeps_parameter_names(corpus_root, tmp_path):
    L.seed_everything(0)
    data = FolderDataModule(str(corpus_root), segment=0.25, batch_size=2, epoch_size=4, valid_split="test")
    module = SeparationModule(TinyNet())
    names = set(module.state_dict())
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[CompileNetwork(backend="eager")])  # eager: no C++ toolchain needed
    trainer.fit(module, data)
    assert module.net._compiled_call_impl is not None  # nn.Module.compile happened
    ckpt = load_checkpoint(next((tmp_path / "checkpoints").glob("*.ckpt")))
    assert set(ckpt["state_dict"]) == names and trainer.global_step == 2
    assert torch.isfinite(module.net(torch.randn(1, 2, 256))).all()
