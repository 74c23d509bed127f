"""Pretrained models by name (issue 28): tiny releases in their real formats on a real HTTP server on
127.0.0.1 (tests/helpers/pretrained.py) are fetched through the mirror, checked, converted without
running pickled code, cached once, and used offline; and every real registry entry is well formed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.imports import RunsShell
from helpers.pretrained import ORIGIN, cli_error, demucs_entry, served_fixture, sha256, tiny_htdemucs
from helpers.remote import Fault
from helpers.tools import song, stems
from stemsep.cli import main
from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.inference import Separator
from stemsep.inference.bag import BagOfModels
from stemsep.io.audio import read_audio
from stemsep.io.checkpoint import load_checkpoint, load_separator
from stemsep.io.import_checkpoint import import_checkpoint
from stemsep.io.import_demucs import SUPPORTED, import_demucs
from stemsep.io.pretrained import fetch_model
from stemsep.io.registry import REGISTRY_FILE, cached, entry, read_registry
from stemsep.io.remote import Retry

served = served_fixture()


def half_rounded(model: torch.nn.Module) -> torch.nn.Module:
    """The demucs model with the weights its package stores (serialize_model saves them as float16)."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(value.half().float())
    return model.eval()


def check_separate_by_name(net: torch.nn.Module, name: str, folder: Path) -> None:
    """``stemsep separate song.wav --model NAME`` writes ``net``'s output on the (normalised) 1 s song: one
    chunk of the tiny models' 1 s segment."""
    mix_file = song(folder / "song.wav", 1.0)
    assert main(["separate", str(mix_file), "--model", name, "--shifts", "0", "--overlap", "0", "--segment", "1",
                 "--bits", "32", "--device", "cpu", "-o", str(folder / "out")]) == 0
    mix = read_audio(mix_file)[0]
    mean, std = mix.mean(0).mean(), mix.mean(0).std()
    with torch.no_grad():
        expected = net(((mix - mean) / std)[None])[0] * std + mean
    written = stems(folder / "out" / "song", net.sources)
    assert written.shape == expected.shape and expected.abs().max() > 1e-3
    assert (written - expected).abs().max() < 1e-4


def test_separate_by_name_downloads_verifies_converts_caches_and_separates(served, tmp_path):
    # the stems `separate --model tiny_htdemucs` writes are demucs' own model's output
    check_separate_by_name(half_rounded(tiny_htdemucs(0)), "tiny_htdemucs", tmp_path / "a")
    assert served.downloads("tiny_htdemucs") == 1
    (path,) = served.entries("tiny_htdemucs")
    import_demucs(served.files["tiny_htdemucs"][0], tmp_path / "direct.ckpt")  # the same file converted by hand
    direct, cached_net = load_separator(tmp_path / "direct.ckpt"), load_separator(path)
    assert all(torch.equal(v, cached_net.state_dict()[k]) for k, v in direct.state_dict().items())
    fetched = load_checkpoint(path)["hyper_parameters"]["imported_from"]
    assert fetched["files"] == [{"url": f"{served.server.url}/{served.files['tiny_htdemucs'][0].name}",
                                 "sha256": fetched["files"][0]["sha256"]}]
    # the second run reads the cache: no request at all
    requests = len(served.server.log)
    check_separate_by_name(half_rounded(tiny_htdemucs(0)), "tiny_htdemucs", tmp_path / "b")
    assert len(served.server.log) == requests


def test_a_demucs_bag_becomes_our_bag_with_its_per_source_weights(served):
    sep = Separator.from_pretrained("tiny_ft", "cpu")
    bag = load_separator(fetch_model("tiny_ft"))
    assert isinstance(bag, BagOfModels) and len(bag.models) == 4
    assert bag.weights == [[float(i == j) for j in range(4)] for i in range(4)]
    assert sep.sources == ["drums", "bass", "other", "vocals"] and served.downloads("tiny_ft") == 4
    mix = torch.randn(1, 2, 44100)
    with torch.no_grad():  # source i from member i, as demucs' BagOfModels mixes them
        expected = torch.cat([half_rounded(tiny_htdemucs(10 + i))(mix)[:, i:i + 1] for i in range(4)], 1)
        assert (bag.eval()(mix) - expected).abs().max() < 1e-4


def test_msst_checkpoint_and_yaml_convert_like_import_checkpoint(served, tmp_path):
    path = fetch_model("tiny_roformer")
    ckpt, config = served.files["tiny_roformer"][0], served.folder / "tinyroformer.yaml"
    import_checkpoint(ckpt, config, tmp_path / "direct.ckpt", model_type="bs_roformer")
    direct, fetched = load_separator(tmp_path / "direct.ckpt"), load_separator(path)
    assert type(fetched).__name__ == "BSRoFormer"
    assert all(torch.equal(v, fetched.state_dict()[k]) for k, v in direct.state_dict().items())


def test_a_dropped_connection_resumes(served):
    file = served.files["tiny_htdemucs"][0]
    cut = file.stat().st_size // 3
    served.server.faults.append(Fault(match=file.name, after_bytes=cut))
    path = fetch_model("tiny_htdemucs")
    assert [(rng, outcome) for _, rng, outcome in served.server.requests(file.name)] == [
        (None, f"dropped after {cut} bytes"), (f"bytes={cut}-", "ok")]
    assert load_separator(path).sources == ["drums", "bass", "other", "vocals"]


def _with_entry(served, name: str, spec: dict) -> None:
    """Add an entry to the test registry."""
    data = yaml.safe_load(served.registry.read_text())
    data["models"][name] = spec
    served.registry.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_wrong_hash_or_class_is_one_line_and_nothing_is_cached(served, tmp_path, capsys):
    ckpt = served.files["tiny_roformer"][0]
    spec = yaml.safe_load(served.registry.read_text())["models"]["tiny_roformer"]
    _with_entry(served, "tampered", {**spec, "files": [{"url": f"{ORIGIN}/{ckpt.name}", "sha256": "0" * 64}]})
    # and a demucs file whose name's prefix does not match its bytes
    renamed = served.folder / "badsig-00000000.th"
    renamed.write_bytes(served.files["tiny_htdemucs"][0].read_bytes())
    _with_entry(served, "renamed", demucs_entry([renamed]))
    # and an entry that says another class than the file holds
    _with_entry(served, "mislabelled", demucs_entry(served.files["tiny_htdemucs"], arch="stemsep.models.HDemucs"))
    mix = song(tmp_path / "song.wav", 0.5)
    for name in ("tampered", "renamed"):
        err = cli_error(["separate", str(mix), "--model", name, "-o", str(tmp_path / "o")], capsys)
        assert "sha256" in err and "nothing was cached" in err and served.server.url in err
        assert sorted(p.name for p in (served.cache / name).rglob("*")) == [".lock"], name
    err = cli_error(["models", "download", "mislabelled"], capsys)
    assert err == ("stemsep: error: mislabelled: the file holds a stemsep.models.HTDemucs of sources ['drums', "
                   "'bass', 'other', 'vocals'] at 44100 Hz, the registry says a stemsep.models.HDemucs of ['drums', "
                   "'bass', 'other', 'vocals'] at 44100 Hz")
    assert sorted(p.name for p in (served.cache / "mislabelled").rglob("*")) == [".lock"]


def test_pickled_code_is_refused_without_running(served, tmp_path):
    """A package whose bytes match the registry (the publisher's own file turned hostile) still never runs."""
    marker = tmp_path / "ran"
    package = {"klass": RunsShell(marker), "args": (), "kwargs": {}, "state": {}}
    evil = served.folder / "evil.th"
    torch.save(package, evil)
    named = evil.with_name(f"evil-{sha256(evil)[:8]}.th")  # named as demucs names a release
    evil.rename(named)
    _with_entry(served, "evil", demucs_entry([named]))
    with pytest.raises(BadCheckpointError) as info:
        fetch_model("evil")
    assert "refused" in str(info.value) and named.name in str(info.value) and "\n" not in str(info.value)
    assert str(served.cache) not in str(info.value)  # names the URL, not the temporary download
    assert not marker.exists() and served.entries("evil") == []


def test_offline_cached_works_and_not_cached_names_the_url(served, tmp_path, monkeypatch, capsys):
    path = fetch_model("tiny_htdemucs")
    served.server.close()
    monkeypatch.setenv("STEMSEP_OFFLINE", "1")
    assert fetch_model("tiny_htdemucs") == path
    check_separate_by_name(half_rounded(tiny_htdemucs(0)), "tiny_htdemucs", tmp_path)
    err = cli_error(["models", "download", "tiny_ft"], capsys)
    file = served.files["tiny_ft"][0].name
    assert f"{ORIGIN}/{file}" in err and f"stemsep models add {file}" in err and "--name tiny_ft" in err


def test_network_down_and_not_cached_names_the_url_and_the_manual_way(served):
    served.server.close()  # connection refused: one attempt only here
    with pytest.raises(BadCheckpointError) as info:
        fetch_model("tiny_htdemucs", retry=Retry(retries=0, timeout=5))
    text = str(info.value)
    name = served.files["tiny_htdemucs"][0].name
    assert text.startswith(f"{served.server.url}/{name}: ") and "gave up after 1 attempt" in text
    assert f"download {ORIGIN}/{name} and run: stemsep models add {name} --name tiny_htdemucs" in text


def test_unverified_entries_need_consent_then_are_pinned(served, capsys):
    with pytest.raises(BadCheckpointError, match="--trust-unverified"):
        fetch_model("tiny_roformer_unverified")
    assert served.downloads("tiny_roformer_unverified") == 0
    assert main(["models", "download", "tiny_roformer_unverified", "--trust-unverified"]) == 0
    path = cached(entry("tiny_roformer_unverified"))
    assert path is not None and str(path) in capsys.readouterr().out
    assert fetch_model("tiny_roformer_unverified") == path  # pinned: no consent, no download needed again
    assert served.downloads("tiny_roformer_unverified") == 1
    config = served.folder / "tinyroformer.yaml"  # a changed config is another conversion: not this entry
    config.write_text(config.read_text() + "# edited\n")
    assert cached(entry("tiny_roformer_unverified")) is None


@pytest.mark.slow  # two fresh Python processes importing torch: ~15 s on 2 busy cores
def test_two_processes_fetching_at_once_leave_one_good_entry(served):
    file = served.files["tiny_htdemucs"][0]
    served.server.faults.append(Fault(match=file.name, stall=1.5))  # the first download is slow: both overlap
    code = "from stemsep.io.pretrained import fetch_model; print(fetch_model('tiny_htdemucs'))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and served.entries("tiny_htdemucs") == [Path(paths.pop())]
    assert served.downloads("tiny_htdemucs") == 1  # the second process waited and used the first's entry
    assert load_separator(served.entries("tiny_htdemucs")[0]).sources == ["drums", "bass", "other", "vocals"]
    assert sorted(p.name for p in (served.cache / "tiny_htdemucs").iterdir()) == sorted(
        [served.entries("tiny_htdemucs")[0].name, served.entries("tiny_htdemucs")[0].with_suffix(".json").name,
         ".lock"])  # no partial download or temporary file left


def test_a_killed_fetch_leaves_nothing_behind_and_an_unusable_cache_is_one_line(served, tmp_path, monkeypatch):
    folder = served.cache / "tiny_htdemucs"
    (folder / ".download-killed").mkdir(parents=True)  # what a fetch killed mid-way leaves
    (folder / ".download-killed" / "tinyhtd.th").write_bytes(b"half")
    (folder / ".0123.ckpt.tmp-abc.ckpt").write_bytes(b"half")
    path = fetch_model("tiny_htdemucs")
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, path.with_suffix(".json").name, ".lock"])
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("STEMSEP_CACHE", str(tmp_path / "afile" / "models"))
    with pytest.raises(StemsepError, match="cannot create output directory"):
        fetch_model("tiny_htdemucs")


def test_an_unknown_name_is_not_a_file_either(served, tmp_path, capsys, monkeypatch):
    err = cli_error(["models", "info", "tiny_htdemcus"], capsys)
    assert "no such model" in err and "tiny_htdemucs" in err
    # a file of that name in the working folder wins over the registry
    monkeypatch.chdir(tmp_path)
    Path("tiny_htdemucs").write_bytes(b"not a checkpoint")
    with pytest.raises(BadCheckpointError, match="^tiny_htdemucs: is not a PyTorch checkpoint"):
        load_checkpoint("tiny_htdemucs")
    assert served.downloads("tiny_htdemucs") == 0


# ------------------------------------------------------------------- the shipped registry itself
REAL = read_registry(REGISTRY_FILE)
HUB_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's HASH_REGEX: the prefix in a file name


def demucs_remote() -> tuple[dict[str, str], Path]:
    """demucs' own list of released files (signature -> URL) and its folder of bag YAMLs."""
    pretrained = pytest.importorskip("demucs.pretrained")
    remote = Path(pretrained.__file__).parent / "remote"
    return pretrained._parse_remote_files(remote / "files.txt"), remote


def test_the_registry_has_the_models_the_issue_names():
    assert {"htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "scnet"} <= set(REAL)
    assert {e.model_type for e in REAL.values() if e.family == "msst"} >= {"bs_roformer", "mel_band_roformer"}


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_entry_is_well_formed(name):
    item = REAL[name]
    assert item.files and all(f.url.startswith("https://") for f in item.files)
    assert item.sources and item.samplerate == 44100 and item.license and item.reported and item.source
    for file in item.files:
        if item.family == "demucs":  # demucs' convention, checked as torch.hub does
            assert file.sha256_prefix == HUB_HASH.search(file.name).group(1) and len(file.sha256_prefix) == 8
        assert file.identity or not item.verified
    if item.family == "demucs":
        urls, remote = demucs_remote()
        bag = yaml.safe_load((remote / f"{name}.yaml").read_text())
        assert [f.url for f in item.files] == [urls[sig] for sig in bag["models"]]
        assert item.weights == (tuple(tuple(float(w) for w in row) for row in bag["weights"])
                                if "weights" in bag else None)
        assert item.segment == bag.get("segment") and item.arch in SUPPORTED.values()
    else:
        assert item.config.is_file() and item.parameters


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if e.parameters > 50_000_000 else [])
                                  for n, e in sorted(REAL.items()) if e.family == "msst"])
def test_msst_configs_build_the_network_at_full_size(name):
    item = REAL[name]  # the large ones (slow): 1-4 s and up to 1 GB each
    from stemsep.io.import_checkpoint import MODEL_TYPES, build_network, read_msst_config

    net, config = build_network(read_msst_config(item.config, MODEL_TYPES[item.model_type].adapt_config),
                                item.model_type)
    assert config["class_path"] == item.arch and tuple(net.sources) == item.sources
    assert net.samplerate == item.samplerate and sum(p.numel() for p in net.parameters()) == item.parameters


@pytest.mark.parametrize("name", sorted(n for n, e in REAL.items() if e.family == "demucs"))
def test_demucs_entries_build_their_class_at_full_size(name):
    """The files carry their own constructor arguments; our class of the entry builds at demucs' defaults."""
    from stemsep.io.checkpoint import import_class

    net = import_class(REAL[name].arch)(sources=list(REAL[name].sources))
    assert tuple(net.sources) == REAL[name].sources and sum(p.numel() for p in net.parameters()) > 10_000_000


def test_a_malformed_registry_is_one_line_naming_file_and_key(tmp_path, monkeypatch):
    bad = tmp_path / "extra.yaml"
    bad.write_text("models:\n  x:\n    family: onnx\n    files: [https://h/x.onnx]\n    sources: [a]\n"
                   "    samplerate: 1\n    arch: y\n")
    monkeypatch.setenv("STEMSEP_REGISTRY", str(bad))
    with pytest.raises(StemsepError, match=re.escape(f"{bad}: models.x.family: 'onnx' is not one of")):
        entry("x")


def test_a_missing_bare_name_points_at_the_model_list(served, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = cli_error(["separate", str(song(tmp_path / "s.wav", 0.5)), "--model", "tiny_htdemcus", "-o", "out"], capsys)
    assert err == ("stemsep: error: tiny_htdemcus: checkpoint not found (nor a released model's name: "
                   "`stemsep models list`)")


def test_fetching_again_gives_the_same_bytes(served):
    """A LoRA run names its base by sha256: a model removed from the cache and fetched again must be the same file."""
    for name in ("tiny_htdemucs", "tiny_roformer"):
        first = fetch_model(name).read_bytes()
        assert main(["models", "remove", name]) == 0
        assert fetch_model(name).read_bytes() == first
        assert served.downloads(name) == 2


def test_provenance_names_a_released_model_by_its_name(tmp_path, monkeypatch):
    from stemsep.inference.separator import model_name

    monkeypatch.chdir(tmp_path)  # no file called htdemucs here
    assert model_name("htdemucs") == "htdemucs"
    (tmp_path / "htdemucs").mkdir()  # a folder of that name (say, an earlier -o htdemucs) does not hide it
    assert model_name("htdemucs") == "htdemucs"
    (tmp_path / "htdemucs").rmdir()
    (tmp_path / "htdemucs").write_bytes(b"")  # a file of that name is the file
    assert model_name("htdemucs") == str(tmp_path / "htdemucs")


@pytest.mark.parametrize("key,value,needle", [
    ("samplerate", "44.1k", "samplerate: a whole number of Hz"),
    ("sdr", "9.0 dB", "sdr: a number"),
    ("parameters", "many", "parameters: a number"),
    ("sources", "vocals", "sources: a list of stem names"),
])
def test_a_registry_value_of_the_wrong_type_is_one_line(tmp_path, key, value, needle):
    import yaml

    from stemsep.errors import StemsepError
    from stemsep.io.registry import read_registry

    spec = {"family": "demucs", "arch": "stemsep.models.HTDemucs", "sources": ["vocals"], "samplerate": 44100,
            "files": [{"url": "https://example.org/a-12345678.th", "sha256_prefix": "12345678"}], key: value}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "models": {"x": spec}}))
    with pytest.raises(StemsepError) as err:
        read_registry(path)
    assert f"models.x.{needle}" in str(err.value) and "\n" not in str(err.value)
