import lightning as L
import pytest
import torch

from helpers import TinyNet
from stemsep.errors import StemsepError
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.training.module import SeparationModule


def _batch(seed=0, batch=2, time=2048):
    g = torch.Generator().manual_seed(seed)
    stems = torch.randn(batch, 4, 2, time, generator=g) * 0.1
    return stems.sum(1), stems


def test_loss_falls_on_fixed_batch():
    torch.manual_seed(0)
    module = SeparationModule(TinyNet(), optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    opt = module.configure_optimizers()
    batch = _batch()
    first = None
    for _ in range(30):
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.8 * first


def test_source_weights_select_one_source():
    module = SeparationModule(TinyNet(), source_weights=[0, 0, 0, 1])
    mix, stems = _batch()
    est = module.net(mix)
    expected = torch.nn.functional.l1_loss(est[:, 3], stems[:, 3])
    assert torch.allclose(module.training_step((mix, stems), 0), expected, atol=1e-6)


def test_bad_network_and_weights_are_one_line_errors():
    class NoSources(torch.nn.Module):
        pass

    with pytest.raises(StemsepError, match="lacks attribute"):
        SeparationModule(NoSources())
    with pytest.raises(StemsepError, match="source_weights"):
        SeparationModule(TinyNet(), source_weights=[1, 1])


def test_scheduler_steps_every_optimizer_step():
    module = SeparationModule(TinyNet(), scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5))
    config = module.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"


def test_fit_checkpoint_reload_and_init_from(corpus_root, tmp_path):
    from stemsep.data.loaders.folder import FolderDataModule

    L.seed_everything(0)
    data = FolderDataModule(str(corpus_root), segment=0.5, batch_size=2, epoch_size=4, valid_split="test")
    module = SeparationModule(TinyNet())
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False)
    trainer.fit(module, data)
    assert "valid/nsdr_vocals" in trainer.callback_metrics
    ckpt_path = next((tmp_path / "checkpoints").glob("*.ckpt"))
    ckpt = load_checkpoint(ckpt_path)  # weights_only: the checkpoint holds no pickled objects
    assert ckpt["hyper_parameters"]["net"]["class_path"] == "helpers.nets.TinyNet"
    net = load_separator(ckpt_path)
    mix = torch.randn(1, 2, 1000)
    assert torch.allclose(net(mix), module.net.eval()(mix))

    fresh = SeparationModule(TinyNet(), init_from=str(ckpt_path))
    trainer2 = L.Trainer(max_steps=0, accelerator="cpu", logger=False, default_root_dir=tmp_path / "b",
                         enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer2.fit(fresh, data)
    for a, b in zip(fresh.net.state_dict().values(), module.net.state_dict().values()):
        assert torch.equal(a, b)
