"""``resolve_device``: the one place ``--device`` / ``Separator(device=...)`` is parsed and checked —
an unknown name or a GPU that is not there is one line saying what to use, not a traceback."""

from __future__ import annotations

import pytest
import torch

from helpers.recipes import save_tiny
from stemsep.errors import BadArgumentError
from stemsep.inference import Separator
from stemsep.inference.device import resolve_device
from stemsep.inference.separate import separate_files

NO_GPU = "--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False); use --device cpu"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_default_and_cpu(no_gpu):
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == resolve_device(" CPU ") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu(no_gpu):
    with pytest.raises(BadArgumentError) as info:
        resolve_device("cuda")
    assert str(info.value) == NO_GPU
    with pytest.raises(BadArgumentError, match=r"^--device cuda:1: no CUDA GPU is visible"):
        resolve_device("cuda:1")
    with pytest.raises(BadArgumentError, match=r"^--device mps: no Apple GPU \(MPS\) is available"):
        resolve_device("mps")


def test_cuda_index_past_the_last_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BadArgumentError, match=r"^--device cuda:2: only 2 CUDA GPU\(s\) visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name, problem", [("tpu", "unknown device"), ("gpu", "unknown device"),
                                           ("cuda:x", "unknown device"), ("", "unknown device"),
                                           ("meta", "not a device stemsep separates on")])
def test_unknown_devices_list_the_valid_names(name, problem):
    with pytest.raises(BadArgumentError) as info:
        resolve_device(name)
    assert str(info.value) == f"--device {name}: {problem} (choose cpu, cuda, cuda:N, mps)"


def test_separator_and_separate_files_use_it(no_gpu, tmp_path):
    ckpt = save_tiny(tmp_path / "tiny.ckpt")
    with pytest.raises(BadArgumentError, match="^" + NO_GPU.replace("(", r"\(").replace(")", r"\)") + "$"):
        Separator.from_checkpoint(ckpt, device="cuda")
    with pytest.raises(BadArgumentError, match=r"^--device tpu: unknown device"):
        Separator(torch.nn.Identity(), device="tpu")
    with pytest.raises(BadArgumentError, match=r"^--device tpu: unknown device"):
        separate_files(tmp_path / "missing.wav", tmp_path / "out", models=ckpt, device="tpu")
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert Separator.from_checkpoint(ckpt).device == torch.device("cpu")  # default without a GPU
