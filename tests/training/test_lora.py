"""LoRA fine-tuning (``model.lora``, stemsep.training.lora): only adapters train, checkpoints hold the
adapters and name their base, resuming continues the run exactly, and ``stemsep merge-lora`` writes a
plain checkpoint that separates as base + adapters do."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import REPO, TinyNet
from helpers.recipes import save_tiny
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.errors import BadArgumentError, BadCheckpointError, StemsepError
from stemsep.io.checkpoint import build_from_config, load_checkpoint, load_separator, save_checkpoint
from stemsep.io.files import file_sha256
from stemsep.training.lora import CHECKPOINT_KEY, LoRA, inject, is_adapter_key, merge, merge_lora
from stemsep.training.module import SeparationModule

pytest.importorskip("peft")

TINY_TARGETS = ["body.0", "body.2"]


def expected_adapter_parameters(net: nn.Module, names: list[str], r: int) -> int:
    """r x (in x kernel) for A plus (out x r) for B, per adapted convolution/linear."""
    total = 0
    for name in names:
        layer = net.get_submodule(name)
        weight = layer.weight
        per_in = weight[0].numel()  # in_channels x kernel
        total += r * per_in + weight.shape[0] * r
    return total


def loader(seed: int = 0, batches: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(batches * 2, 2, 2000, generator=generator)
    stems = torch.randn(batches * 2, 4, 2, 2000, generator=generator) * 0.3
    return DataLoader(TensorDataset(mix, stems), batch_size=2, shuffle=False)


def module(base: Path, r: int = 2, seed: int = 1, **kwargs) -> SeparationModule:
    torch.manual_seed(seed)  # the adapters' initial A
    return SeparationModule(TinyNet(), init_from=str(base), max_nonfinite_steps=None,
                            lora={"target_modules": TINY_TARGETS, "r": r, "alpha": 4.0}, **kwargs)


def trainer(root: Path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, default_root_dir=root,
                     callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=root, save_last=True, save_top_k=-1)],
                     **kwargs)


@pytest.fixture
def base(tmp_path) -> Path:
    return save_tiny(tmp_path / "base.ckpt", seed=3)


def test_only_adapters_train(base, tmp_path):
    model = module(base)
    trainable = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter_key(n) for n in trainable)
    plain = TinyNet()
    assert model.count_parameters(True) == expected_adapter_parameters(plain, TINY_TARGETS, r=2) == 212
    fit = trainer(tmp_path / "run", max_steps=4)
    fit.fit(model, loader())
    optimized = {id(p) for group in fit.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.net.parameters() if p.requires_grad}
    # base weights are still the base checkpoint's, the adapters moved
    stored = {k[len("net."):]: v for k, v in load_checkpoint(base)["state_dict"].items()}
    for name, value in model.net.state_dict().items():
        if not is_adapter_key(name):
            torch.testing.assert_close(value, stored[name.replace("base_layer.", "")], rtol=0, atol=0)
    assert all(p.abs().sum() > 0 for n, p in model.net.named_parameters() if "lora_B" in n)  # B starts at 0

    ckpt = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert ckpt["state_dict"] and all(is_adapter_key(k) for k in ckpt["state_dict"])  # adapters only
    assert sum(v.numel() for v in ckpt["state_dict"].values()) == 212
    info = ckpt[CHECKPOINT_KEY]
    assert info["base"]["sha256"] == file_sha256(base) and info["base"]["path"] == str(base)
    assert info["lora"] == {"target_modules": TINY_TARGETS, "r": 2, "alpha": 4.0, "dropout": 0.0}
    with pytest.raises(BadCheckpointError, match="merge-lora"):  # not a whole network
        load_separator(tmp_path / "run" / "last.ckpt")


class AtTrainStart(L.Callback):
    """The network's weights and the optimizer's state when training (re)starts."""

    def on_train_start(self, trainer, pl_module):
        self.weights = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())  # its tensors change in place
        self.step = trainer.global_step


def test_resume_restores_adapters_optimizer_and_step(base, tmp_path):
    first = module(base)
    run = trainer(tmp_path / "run", max_steps=2)
    run.fit(first, loader())
    saved_weights = {k: v.clone() for k, v in first.net.state_dict().items()}
    saved_optimizer = run.optimizers[0].state_dict()
    resumed = module(base, seed=7)  # other initial adapters: the checkpoint must replace them
    start = AtTrainStart()
    fit = trainer(tmp_path / "run", max_steps=4)
    fit.callbacks.append(start)
    fit.fit(resumed, loader(), ckpt_path=str(tmp_path / "run" / "last.ckpt"))
    assert start.step == 2 and fit.global_step == 4
    assert start.weights.keys() == saved_weights.keys()
    for name, value in saved_weights.items():
        torch.testing.assert_close(start.weights[name], value, rtol=0, atol=0, msg=name)
    states = saved_optimizer["state"]
    assert len(states) == len(start.optimizer["state"]) == 4  # Adam moments of the 4 adapter tensors only
    for index, state in states.items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(start.optimizer["state"][index][key], state[key], rtol=0, atol=0)
    assert any(not torch.equal(saved_weights[k], v) for k, v in resumed.net.state_dict().items())  # it trained on


def test_resume_refuses_another_base(base, tmp_path):
    trainer(tmp_path / "run", max_steps=1).fit(module(base), loader())
    other = save_tiny(tmp_path / "other.ckpt", seed=4)
    with pytest.raises(BadCheckpointError, match="sha256"):
        trainer(tmp_path / "run2", max_steps=2).fit(module(other), loader(),
                                                   ckpt_path=str(tmp_path / "run" / "last.ckpt"))


def test_merged_checkpoint_separates_as_base_plus_adapters(base, tmp_path, capsys):
    model = module(base)
    trainer(tmp_path / "run", max_steps=4).fit(model, loader())
    mix = torch.randn(1, 2, 3000)
    with torch.no_grad():
        with_adapters = model.net.eval()(mix)
        base_out = load_separator(base)(mix)
    assert (with_adapters - base_out).abs().max() > 1e-4  # the adapters change the output
    merged_path = tmp_path / "merged.ckpt"
    assert main(["merge-lora", str(tmp_path / "run" / "last.ckpt"), "-o", str(merged_path)]) == 0
    assert "merged.ckpt" in capsys.readouterr().out
    merged = load_separator(merged_path)
    assert type(merged) is TinyNet and not any(is_adapter_key(k) for k in merged.state_dict())
    with torch.no_grad():
        assert (merged(mix) - with_adapters).abs().max() <= 1e-5
    # existing output needs --force; a wrong --base is refused by its hash
    assert main(["merge-lora", str(tmp_path / "run" / "last.ckpt"), "-o", str(merged_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    other = save_tiny(tmp_path / "other.ckpt", seed=4)
    with pytest.raises(BadCheckpointError, match="sha256"):
        merge_lora(tmp_path / "run" / "last.ckpt", tmp_path / "m2.ckpt", base=other)
    with pytest.raises(BadCheckpointError, match="not a LoRA checkpoint"):
        merge_lora(base, tmp_path / "m3.ckpt")


def test_merge_lora_finds_a_moved_base_only_with_base_option(base, tmp_path):
    trainer(tmp_path / "run", max_steps=1).fit(module(base), loader())
    moved = tmp_path / "elsewhere.ckpt"
    base.rename(moved)
    with pytest.raises(BadCheckpointError, match="--base"):
        merge_lora(tmp_path / "run" / "last.ckpt", tmp_path / "m.ckpt")
    merge_lora(tmp_path / "run" / "last.ckpt", tmp_path / "m.ckpt", base=moved)
    assert (tmp_path / "m.ckpt").is_file()


def test_bad_settings_are_one_line_errors(base):
    with pytest.raises(StemsepError, match="init_from"):
        SeparationModule(TinyNet(), lora={"target_modules": TINY_TARGETS})
    with pytest.raises(BadArgumentError, match="target_modules"):
        SeparationModule(TinyNet(), init_from=str(base), lora={"target_modules": ["nothing_here"]})
    with pytest.raises(BadArgumentError, match="model.lora.rank"):
        SeparationModule(TinyNet(), init_from=str(base), lora={"target_modules": TINY_TARGETS, "rank": 4})
    with pytest.raises(BadArgumentError, match="model.lora.r "):
        LoRA(target_modules=TINY_TARGETS, r=0)


def randomize_adapters(net: nn.Module) -> None:
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)


def check_merge(net: nn.Module, lora: LoRA, mix: torch.Tensor, tmp_path: Path) -> int:
    """Trainable = adapters; merged == base + adapters; the merged net saves and loads as a plain one.
    Returns the number of adapter parameters."""
    config = network_config(net)
    plain_names = set(net.state_dict())
    inject(net, lora)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_key(n) for n in trainable)
    count = sum(p.numel() for p in net.parameters() if p.requires_grad)
    randomize_adapters(net)
    net.eval()
    with torch.no_grad():
        expected = net(mix)
    merged = merge(net)
    assert set(merged.state_dict()) == plain_names
    save_checkpoint(tmp_path / "merged.ckpt", merged, config)
    with torch.no_grad():
        assert (load_separator(tmp_path / "merged.ckpt")(mix) - expected).abs().max() <= 1e-5
    return count


@pytest.mark.slow  # ~15 s on 2 busy cores: HT Demucs pads every input to its 2 s segment
def test_htdemucs_small_transformer_feed_forwards(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "model" / "htdemucs_small.yaml").read_text())
    torch.manual_seed(0)
    net = build_from_config(config)
    lora = LoRA(target_modules=["linear1", "linear2"], r=4, alpha=8)
    linears = [n for n, m in net.named_modules() if n.endswith(("linear1", "linear2"))]
    assert len(linears) == 8
    expected = expected_adapter_parameters(net, linears, r=4)
    assert expected == sum(4 * (net.get_submodule(n).in_features + net.get_submodule(n).out_features)
                           for n in linears)
    assert check_merge(net, lora, torch.randn(1, 2, 44100), tmp_path) == expected


ROFORMER_TARGETS = r".*\.(to_qkv|to_out\.0|net\.1|net\.4)$"  # attention in/out, feed-forward linears


@pytest.mark.parametrize("class_name", ["BSRoFormer", "MelBandRoFormer"])
def test_roformer_attention_and_feed_forward(class_name, tmp_path):
    models = pytest.importorskip("stemsep.models")
    if not hasattr(models, class_name):
        pytest.skip(f"stemsep.models.{class_name} is not there yet")
    torch.manual_seed(0)
    net = getattr(models, class_name)(dim=16, depth=1, stereo=True, num_stems=2, sources=["vocals", "other"],
                                      time_transformer_depth=1, freq_transformer_depth=1, dim_head=8, heads=2,
                                      **({"num_bands": 8} if class_name == "MelBandRoFormer" else {}))
    targets = [n for n, _ in net.named_modules() if re.fullmatch(ROFORMER_TARGETS, n)]
    assert len(targets) == 8  # time and frequency transformer: to_qkv, to_out.0, two feed-forward linears each
    expected = sum(2 * (net.get_submodule(n).in_features + net.get_submodule(n).out_features) for n in targets)
    assert expected == 2 * (16 + 48) * 2 + 2 * (16 + 16) * 2 + 2 * (16 + 64) * 4
    assert check_merge(net, LoRA(target_modules=ROFORMER_TARGETS, r=2, alpha=4), torch.randn(1, 2, 8000),
                       tmp_path) == expected


def test_ema_checkpoints_hold_adapters_only_and_resume(base, tmp_path):
    """With EMAWeightAveraging (as recipes/roformer_lora_ft.yaml): both weight copies it writes are adapters."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    def ema_trainer(max_steps):
        fit = trainer(tmp_path / "run", max_steps=max_steps)
        fit.callbacks.append(EMAWeightAveraging(decay=0.5))
        return fit

    first = module(base)
    ema_trainer(2).fit(first, loader())
    ckpt = load_checkpoint(tmp_path / "run" / "last.ckpt")
    for key in ("state_dict", "current_model_state"):
        assert ckpt[key] and all(is_adapter_key(k) for k in ckpt[key]), key
    assert any(not torch.equal(ckpt["state_dict"][k], ckpt["current_model_state"][k]) for k in ckpt["state_dict"])
    resumed = module(base, seed=7)
    start = AtTrainStart()
    fit = ema_trainer(4)
    fit.callbacks.append(start)
    fit.fit(resumed, loader(), ckpt_path=str(tmp_path / "run" / "last.ckpt"))
    assert start.step == 2 and fit.global_step == 4
    for name, value in ckpt["current_model_state"].items():  # training resumes from the live weights
        torch.testing.assert_close(start.weights[name[len("net."):]], value, rtol=0, atol=0)


@pytest.mark.slow  # ~20 s on 2 busy cores
def test_community_checkpoint_import_lora_and_merge(tmp_path):
    """The issue's workflow: an MSST checkpoint (saved from the bs-roformer oracle) is imported, LoRA
    fine-tuned on the attention and feed-forward layers, and merged into a plain checkpoint."""
    bs_roformer = pytest.importorskip("bs_roformer")
    pytest.importorskip("stemsep.models.bs_roformer")
    from stemsep.io.import_checkpoint import import_checkpoint

    torch.manual_seed(0)
    small = {"dim": 16, "depth": 1, "time_transformer_depth": 1, "freq_transformer_depth": 1, "dim_head": 8,
             "heads": 2, "stft_n_fft": 512, "stft_win_length": 512, "stft_hop_length": 128,
             "freqs_per_bands": (32, 32, 64, 129)}
    oracle = bs_roformer.BSRoformer(stereo=True, num_stems=4, **small)
    torch.save(oracle.state_dict(), tmp_path / "msst.ckpt")
    lines = ["audio:", "  chunk_size: 8192", "  num_channels: 2", "  sample_rate: 44100", "model:"]
    lines += [f"  {k}: {list(v) if isinstance(v, tuple) else v}" for k, v in small.items()]
    lines += ["  stereo: true", "  num_stems: 4", "  zero_dc: false", "training:",
              "  instruments: [drums, bass, other, vocals]", "  target_instrument: null"]
    (tmp_path / "msst.yaml").write_text("\n".join(lines) + "\n")
    base = tmp_path / "base.ckpt"
    import_checkpoint(tmp_path / "msst.ckpt", tmp_path / "msst.yaml", base, model_type="bs_roformer")

    net = load_separator(base).train()
    targets = [n for n, _ in net.named_modules() if re.fullmatch(ROFORMER_TARGETS, n)]
    expected = sum(4 * (net.get_submodule(n).in_features + net.get_submodule(n).out_features) for n in targets)
    torch.manual_seed(1)
    model = SeparationModule(net, init_from=str(base), max_nonfinite_steps=None,
                             lora={"target_modules": ROFORMER_TARGETS, "r": 4, "alpha": 8.0},
                             optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    assert model.count_parameters(True) == expected > 0
    generator = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(4, 2, 8192, generator=generator),
                                    torch.randn(4, 4, 2, 8192, generator=generator) * 0.3), batch_size=2)
    trainer(tmp_path / "run", max_steps=2).fit(model, data)
    assert sum(v.numel() for v in load_checkpoint(tmp_path / "run" / "last.ckpt")["state_dict"].values()) == expected
    merge_lora(tmp_path / "run" / "last.ckpt", tmp_path / "merged.ckpt")
    mix = torch.randn(1, 2, 8192)
    with torch.no_grad():
        tuned = model.net.eval()(mix)
        merged = load_separator(tmp_path / "merged.ckpt")(mix)
        before = load_separator(base)(mix)
    assert (merged - tuned).abs().max() <= 1e-5
    assert (tuned - before).abs().max() > 1e-4  # the adapters learned something


def test_validate_from_a_lora_checkpoint(base, tmp_path):
    """``stemsep validate/test --ckpt_path`` on a LoRA run: base from init_from, adapters from the checkpoint."""
    trained = module(base)
    trainer(tmp_path / "run", max_steps=2).fit(trained, loader())
    fresh = module(base, seed=7)
    evaluation = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                           enable_model_summary=False)
    evaluation.validate(fresh, loader(), ckpt_path=str(tmp_path / "run" / "last.ckpt"))
    for (name, value), other in zip(trained.net.state_dict().items(), fresh.net.state_dict().values()):
        torch.testing.assert_close(other, value, rtol=0, atol=0, msg=name)


def test_fit_hint_after_a_lora_run_merges_first(base, tmp_path, capsys, monkeypatch):
    """The lines printed after a LoRA fit: the merge-lora command (which works as printed), then
    separate with the merged checkpoint, not with the adapters-only one."""
    import shlex

    from stemsep.training.cli import print_next_command

    monkeypatch.chdir(tmp_path)
    trainer(tmp_path / "run", max_steps=2).fit(module(base), loader())
    capsys.readouterr()
    print_next_command(tmp_path / "run" / "last.ckpt", "a.wav", adapters=True)
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    merge = next(line for line in lines if line.startswith("stemsep merge-lora"))
    separate = next(line for line in lines if line.startswith("stemsep separate"))
    assert lines.index(merge) < lines.index(separate)
    assert "--model run/last-merged.ckpt" in separate
    assert main(shlex.split(merge)[1:]) == 0
    assert type(load_separator(tmp_path / "run" / "last-merged.ckpt")) is TinyNet
