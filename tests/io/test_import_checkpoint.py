"""``stemsep import-checkpoint``: MSST-style checkpoints (a torch state_dict + the YAML config released
beside it) become stemsep checkpoints that separate as the reference model does, without running
pickled code or building Python objects from the YAML.

Oracle: the ``bs-roformer`` package (0.5.x), whose models MSST's RoFormer checkpoints come from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.imports import RunsShell, import_error
from stemsep.cli import main
from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.io.files import file_sha256
from stemsep.io.import_checkpoint import MODEL_TYPES, import_checkpoint, read_msst_config

bs_roformer = pytest.importorskip("bs_roformer")
pytest.importorskip("stemsep.models.bs_roformer")

SMALL = {"dim": 16, "depth": 1, "time_transformer_depth": 1, "freq_transformer_depth": 1, "dim_head": 8, "heads": 2,
         "attn_dropout": 0.0, "ff_dropout": 0.0, "flash_attn": True}
# Keys a config needs to describe the 0.5.1 package's models exactly (MSST's defaults differ):
# the package keeps the DC bin of the output (MSST's copy zeroes it unless zero_dc: false).
ORACLE_KEYS = {"zero_dc": False}
LENGTH = 512 * 40  # a whole number of STFT hops: the reference returns exactly this many samples


def yaml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_config(path: Path, model: dict, *, instruments: list[str], target: str | None,
                 tuples: dict[str, tuple] | None = None, extra_training: str = "") -> Path:
    """A config as MSST ships them: audio/model/training/inference sections, ``!!python/tuple`` lists."""
    lines = ["audio:", "  chunk_size: 352800", "  dim_f: 1024", "  dim_t: 801", "  hop_length: 441",
             "  n_fft: 2048", "  num_channels: 2", "  sample_rate: 44100", "  min_mean_abs: 0.000", "", "model:"]
    lines += [f"  {k}: {yaml_value(v)}" for k, v in model.items()]
    for key, values in (tuples or {}).items():
        lines += [f"  {key}: !!python/tuple"] + [f"  - {v}" for v in values]
    lines += ["", "training:", "  batch_size: 2", "  gradient_accumulation_steps: 1", "  grad_clip: 0",
              "  instruments:"] + [f"  - {i}" for i in instruments]
    lines += [f"  target_instrument: {target if target else 'null'}", "  lr: 1.0e-05", "  use_amp: true"]
    lines += [extra_training] if extra_training else []
    lines += ["", "inference:", "  batch_size: 4", "  dim_t: 801", "  num_overlap: 2", ""]
    path.write_text("\n".join(lines))
    return path


def bs_model(num_stems: int):
    torch.manual_seed(0)
    return bs_roformer.BSRoformer(stereo=True, num_stems=num_stems, **SMALL).eval()


def mel_model(num_stems: int):
    torch.manual_seed(0)
    return bs_roformer.MelBandRoformer(stereo=True, num_stems=num_stems, num_bands=8, sample_rate=44100,
                                       linear_transformer_depth=1, **SMALL).eval()


def same_outputs(oracle, path: Path, num_stems: int) -> None:
    ours = load_separator(path)
    mix = torch.randn(1, 2, LENGTH)
    with torch.no_grad():
        expected = oracle(mix)
        got = ours(mix)
    if num_stems == 1:
        expected = expected[:, None]
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-4


def test_bs_roformer_vocal_model(tmp_path, capsys, recwarn):
    oracle = bs_model(1)
    torch.save(oracle.state_dict(), tmp_path / "model_bs_roformer.ckpt")  # as MSST releases them
    config = write_config(tmp_path / "config.yaml", {**SMALL, **ORACLE_KEYS, "stereo": True, "num_stems": 1,
                                                     "stft_n_fft": 2048,
                                                     "mask_estimator_depth": 2, "multi_stft_hop_size": 147},
                          instruments=["vocals", "other"], target="vocals",
                          tuples={"freqs_per_bands": bs_roformer.bs_roformer.DEFAULT_FREQS_PER_BANDS,
                                  "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256)})
    out = tmp_path / "vocals.ckpt"
    assert main(["import-checkpoint", str(tmp_path / "model_bs_roformer.ckpt"), "--config", str(config),
                 "--model-type", "bs_roformer", "-o", str(out)]) == 0
    assert "['vocals']" in capsys.readouterr().out
    # the reference's loss settings at their defaults (as community configs give them) pass quietly
    assert not [w for w in recwarn if "multi_stft" in str(w.message)]
    same_outputs(oracle, out, 1)
    ckpt = load_checkpoint(out)
    assert ckpt["stemsep"]["sources"] == ["vocals"] and ckpt["stemsep"]["samplerate"] == 44100
    assert ckpt["hyper_parameters"]["net"]["class_path"] == MODEL_TYPES["bs_roformer"].class_path
    imported = ckpt["hyper_parameters"]["imported_from"]
    assert imported["sha256"] == file_sha256(tmp_path / "model_bs_roformer.ckpt")
    assert load_separator(out).segment == 8.0  # chunk_size / sample_rate: MSST's inference chunk


def test_plain_bs_roformer_package_weights_imply_value_residual(tmp_path):
    """A state_dict of the 0.5.1 package itself (depth 2: learned value-residual mixes, which MSST's
    copy lacks) imports without the config naming the option, and separates as the package does."""
    torch.manual_seed(0)
    oracle = bs_roformer.BSRoformer(stereo=True, num_stems=2, **{**SMALL, "depth": 2}).eval()
    assert any("to_value_residual_mix" in key for key in oracle.state_dict())
    torch.save(oracle.state_dict(), tmp_path / "model.ckpt")
    config = write_config(tmp_path / "config.yaml", {**SMALL, **ORACLE_KEYS, "depth": 2, "stereo": True,
                                                     "num_stems": 2},
                          instruments=["vocals", "other"], target=None)
    import_checkpoint(tmp_path / "model.ckpt", config, tmp_path / "out.ckpt", model_type="bs_roformer")
    assert load_checkpoint(tmp_path / "out.ckpt")["hyper_parameters"]["net"]["init_args"]["value_residual"] is True
    same_outputs(oracle, tmp_path / "out.ckpt", 2)


def test_mel_band_roformer_multi_stem_wrapped_from_data_parallel(tmp_path):
    oracle = mel_model(2)
    state = {f"module.{k}": v for k, v in oracle.state_dict().items()}  # saved from DataParallel
    torch.save({"state_dict": state}, tmp_path / "model.pth")
    config = write_config(tmp_path / "config.yaml", {**SMALL, **ORACLE_KEYS, "stereo": True, "num_stems": 2,
                                                     "num_bands": 8, "sample_rate": 44100,
                                                     "linear_transformer_depth": 1},
                          instruments=["vocals", "other"], target=None, extra_training="  model_type: mel_band_roformer")
    summary = import_checkpoint(tmp_path / "model.pth", config, tmp_path / "out.ckpt")  # model_type from the YAML
    assert summary["sources"] == ["vocals", "other"] and summary["model_type"] == "mel_band_roformer"
    same_outputs(oracle, tmp_path / "out.ckpt", 2)
    with pytest.raises(StemsepError, match="already exists"):
        import_checkpoint(tmp_path / "model.pth", config, tmp_path / "out.ckpt")
    import_checkpoint(tmp_path / "model.pth", config, tmp_path / "out.ckpt", force=True)
    with pytest.raises(StemsepError, match="training.model_type is 'mel_band_roformer'"):
        import_checkpoint(tmp_path / "model.pth", config, tmp_path / "o2.ckpt", model_type="bs_roformer")


@pytest.mark.parametrize("zip_format", [True, False])
def test_malicious_pickle_is_refused_without_running(tmp_path, capsys, zip_format):
    marker = tmp_path / "PWNED"
    state = dict(bs_model(1).state_dict())
    state["band_split.payload"] = RunsShell(marker)
    torch.save(state, tmp_path / "evil.ckpt", _use_new_zipfile_serialization=zip_format)
    config = write_config(tmp_path / "config.yaml", {**SMALL, "stereo": True}, instruments=["vocals"], target=None)
    err = import_error(tmp_path / "evil.ckpt", config, "bs_roformer", tmp_path / "out.ckpt", capsys)
    assert err.startswith("stemsep: error: ") and "evil.ckpt" in err, err
    assert "refused" in err and "posix.system" in err if zip_format else "refused" in err
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


def test_yaml_that_builds_python_objects_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    config = write_config(tmp_path / "config.yaml", {**SMALL, "stereo": True}, instruments=["vocals"], target=None)
    config.write_text(config.read_text().replace("  stereo: true",
                                                 f"  stereo: !!python/object/apply:os.system ['touch {marker}']"))
    with pytest.raises(BadCheckpointError, match=r"config.yaml: refused, the YAML asks to build a Python object"):
        read_msst_config(config)
    assert not marker.exists()


def test_unknown_model_key_is_a_one_line_error_naming_it(tmp_path, capsys):
    torch.save(bs_model(1).state_dict(), tmp_path / "m.ckpt")
    config = write_config(tmp_path / "config.yaml", {**SMALL, "stereo": True, "use_quantum_attention": True},
                          instruments=["vocals"], target=None)
    err = import_error(tmp_path / "m.ckpt", config, "bs_roformer", tmp_path / "out.ckpt", capsys)
    assert "config.yaml: model.use_quantum_attention: unknown option" in err, err


def test_inconsistent_inputs_are_one_line_errors(tmp_path):
    torch.save(bs_model(1).state_dict(), tmp_path / "m.ckpt")
    two_stems = write_config(tmp_path / "a.yaml", {**SMALL, "stereo": True, "num_stems": 1},
                             instruments=["vocals", "other"], target=None)
    with pytest.raises(BadCheckpointError, match="model.num_stems 1 but the config names 2"):
        import_checkpoint(tmp_path / "m.ckpt", two_stems, tmp_path / "o.ckpt", model_type="bs_roformer")
    other_size = write_config(tmp_path / "b.yaml", {**SMALL, "dim": 32, "stereo": True}, instruments=["vocals"],
                              target=None)
    with pytest.raises(BadCheckpointError, match="m.ckpt: weight"):
        import_checkpoint(tmp_path / "m.ckpt", other_size, tmp_path / "o.ckpt", model_type="bs_roformer")
    fine = write_config(tmp_path / "c.yaml", {**SMALL, "stereo": True}, instruments=["vocals"], target=None)
    with pytest.raises(StemsepError, match="no training.model_type; give --model-type"):
        import_checkpoint(tmp_path / "m.ckpt", fine, tmp_path / "o.ckpt")
    with pytest.raises(StemsepError, match="--model-type 'mdx23c' is not supported"):
        import_checkpoint(tmp_path / "m.ckpt", fine, tmp_path / "o.ckpt", model_type="mdx23c")
    (tmp_path / "junk.ckpt").write_bytes(b"not a torch file")
    with pytest.raises(BadCheckpointError, match="junk.ckpt: not a weights-only torch file"):
        import_checkpoint(tmp_path / "junk.ckpt", fine, tmp_path / "o.ckpt", model_type="bs_roformer")
    torch.save({"epoch": 3}, tmp_path / "nostate.ckpt")
    with pytest.raises(BadCheckpointError, match="not a state_dict of tensors"):
        import_checkpoint(tmp_path / "nostate.ckpt", fine, tmp_path / "o.ckpt", model_type="bs_roformer")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(BadCheckpointError, match="bad.yaml: not a readable YAML config"):
        read_msst_config(tmp_path / "bad.yaml")
    (tmp_path / "partial.yaml").write_text("model: {dim: 4}\n")
    with pytest.raises(BadCheckpointError, match="no 'audio:' section"):
        read_msst_config(tmp_path / "partial.yaml")
