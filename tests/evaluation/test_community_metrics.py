"""The community's metrics (stemsep.evaluation.community): equal to MSST's own results, batched, in
`stemsep score` (files, summary, report) and in validation (equal to `score` on the same tracks)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from fixtures.make_msst_metrics_fixture import METRICS as MSST_METRICS
from fixtures.make_msst_metrics_fixture import OUT as FIXTURE
from fixtures.make_msst_metrics_fixture import digest, tracks
from helpers import TinyNet
from stemsep.cli import main
from stemsep.errors import StemsepError
from stemsep.evaluation import community
from stemsep.evaluation.community import COMMUNITY_METRICS, CommunityMetrics, community_metrics
from stemsep.evaluation.metrics import nsdr
from stemsep.evaluation.score import score
from stemsep.io.audio import read_audio, write_audio
from stemsep.training import SeparationModule

ALL = list(COMMUNITY_METRICS)
OURS = {"sdr": "usdr"}  # MSST's name -> ours; the others are the same


@pytest.fixture(scope="module")
def msst():
    """The inputs the oracle saw (checked by hash) and MSST's results."""
    data = tracks()
    expected = np.load(FIXTURE)
    assert digest(data) == str(expected["sha256"]), "the fixture's signals are not rebuilt identically"
    return data, expected


def _tensors(track: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(track["estimates"]), torch.from_numpy(track["references"]),
            torch.from_numpy(track["mix"]))


@pytest.mark.parametrize("name", ["stereo", "mono"])
def test_equal_to_msst_on_band_limited_and_silent_stems(msst, name):
    data, expected = msst
    est, ref, mix = _tensors(data[name])
    got = community_metrics(ALL, est, ref, mix, 44100)
    for metric in MSST_METRICS:
        np.testing.assert_allclose(got[OURS.get(metric, metric)].numpy(), expected[f"{name}/{metric}"],
                                   rtol=1e-4, atol=1e-9, err_msg=f"{name} {metric}")


def test_usdr_is_nsdr_and_museval_sdr_stays_framewise(msst):
    est, ref, mix = _tensors(msst[0]["stereo"])
    assert torch.equal(community_metrics(["usdr"], est, ref, mix, 44100)["usdr"], nsdr(est.double(), ref.double()))
    assert "sdr" not in COMMUNITY_METRICS  # `sdr` stays museval's framewise median everywhere


def test_batches_and_chunks_give_each_track_its_own_values(msst, monkeypatch):
    """Two tracks in one batch (as validation sees them) score as each alone, also when the
    transforms are cut into one-item chunks (long tracks)."""
    est, ref, mix = _tensors(msst[0]["stereo"])
    other = (0.5 * est.flip(-1), ref.flip(-1), mix.flip(-1))
    alone = [community_metrics(ALL, *pair, 44100) for pair in ((est, ref, mix), other)]
    batch = (torch.stack([est, other[0]]), torch.stack([ref, other[1]]), torch.stack([mix, other[2]]))
    together = community_metrics(ALL, *batch, 44100)
    monkeypatch.setattr(community, "CHUNK_SAMPLES", 1)
    chunked = community_metrics(ALL, *batch, 44100)
    for metric in ALL:
        expected = torch.stack([alone[0][metric], alone[1][metric]])
        torch.testing.assert_close(together[metric], expected, rtol=1e-6, atol=1e-9, msg=metric)
        torch.testing.assert_close(chunked[metric], expected, rtol=1e-6, atol=1e-9, msg=metric)


def test_silent_references_as_msst_handles_them():
    """A stem absent from the song (silent reference) and an estimate that outputs nothing."""
    t = torch.arange(44100) / 44100
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t).expand(2, -1)
    silent = torch.zeros_like(tone)
    ref = torch.stack([silent, silent, tone])[None]
    est = torch.stack([0.01 * tone, silent, silent])[None]
    v = {k: x[0] for k, x in community_metrics(ALL, est, ref, tone[None], 44100).items()}
    assert v["usdr"][1] == 0 and v["usdr"][0] < -60  # both silent: eps / eps; bleed into silence: very low
    assert v["si_sdr"][0] == pytest.approx(-80) and v["si_sdr"][1] == pytest.approx(-80)
    assert v["fullness"][0] == 100 and v["bleedless"][0] < 100  # nothing missing, something extra
    assert v["bleedless"][1] == 100 and v["fullness"][1] == 100  # both silent: no difference at all
    assert v["bleedless"][2] == 100 and v["fullness"][2] < 5  # silent estimate: nothing bled, all missing
    assert v["log_wmse"][1] == pytest.approx(-4 * math.log(1e-8))  # both silent: the package's ceiling
    assert v["aura_stft"][2] < 0.01 and v["aura_mrstft"][2] < 0.01
    assert all(torch.isfinite(x).all() for x in v.values())


def test_unknown_names_are_one_line_errors(tmp_path):
    with pytest.raises(StemsepError, match=r"model\.metrics: unknown metric\(s\) 'sdx'; choose from usdr"):
        SeparationModule(TinyNet(), metrics=["usdr", "sdx"])
    with pytest.raises(StemsepError, match=r"unknown metric\(s\) 'bleed'"):
        score(tmp_path, tmp_path, metrics=["bleed"])


def _estimates(corpus: Path, out: Path) -> dict[str, Path]:
    """Per test song, estimates = each stem at 0.8 plus 10 % of the next one (bleed), float WAV."""
    songs = {}
    for song in sorted((corpus / "test").iterdir()):
        stems = [read_audio(song / f"{s}.wav")[0] for s in ("drums", "bass", "other", "vocals")]
        for j, source in enumerate(("drums", "bass", "other", "vocals")):
            write_audio(out / song.name / f"{source}.wav", 0.8 * stems[j] + 0.1 * stems[(j + 1) % 4], 44100, bits=32)
        songs[song.name] = song
    return songs


def test_score_writes_community_metrics_and_report(corpus_root, tmp_path, capsys):
    songs = _estimates(corpus_root, tmp_path / "est")
    out, report = tmp_path / "scores", tmp_path / "report"
    assert main(["score", "--references", str(corpus_root / "test"), "--estimates", str(tmp_path / "est"),
                 "--metrics", "usdr", "bleedless", "fullness", "log_wmse", "-o", str(out), "--report", str(report)]) == 0
    table = capsys.readouterr().out
    assert "usdr med/mean" in table and "(dB; log_wmse, bleedless, fullness: scores" in table
    summary = json.loads((out / "summary.json").read_text())
    per_song = {}
    for name, folder in songs.items():
        record = json.loads((out / f"{name}.json").read_text())
        refs = torch.stack([read_audio(folder / f"{s}.wav")[0] for s in ("drums", "bass", "other", "vocals")])
        ests = torch.stack([read_audio(tmp_path / "est" / name / f"{s}.wav")[0]
                            for s in ("drums", "bass", "other", "vocals")])
        mix = read_audio(folder / "mixture.wav")[0]
        per_song[name] = community_metrics(["usdr", "bleedless", "fullness", "log_wmse"], ests, refs, mix, 44100)
        for j, target in enumerate(record["targets"]):
            assert target["frames"] == []  # no framewise metric asked for
            for metric, values in per_song[name].items():
                assert target[metric] == pytest.approx(float(values[j]), rel=1e-12), (name, metric)
    for j, source in enumerate(("drums", "bass", "other", "vocals")):
        for metric in ("usdr", "bleedless", "fullness", "log_wmse"):
            mean = np.mean([float(per_song[n][metric][j]) for n in songs])
            assert summary["sources"][source][metric]["mean"] == pytest.approx(mean, rel=1e-12)
    page = (report / "report.html").read_text()
    assert all(f"<th>{m} median</th>" in page for m in ("usdr", "bleedless", "fullness", "log_wmse"))
    assert (report / "figures" / "medians.png").stat().st_size > 10_000
    assert not list((report / "figures").glob("track-*.png"))  # no frames: no framewise curves


def test_score_mixes_museval_and_community_metrics(corpus_root, tmp_path):
    _estimates(corpus_root, tmp_path / "est")
    out = tmp_path / "scores"
    assert main(["score", "--references", str(corpus_root / "test"), "--estimates", str(tmp_path / "est"),
                 "--metrics", "sdr", "si_sdr", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["all"]) == {"SDR", "nSDR", "si_sdr"}
    assert (out / "summary.csv").read_text().count("si_sdr") == 5  # 4 sources and "all"


class _Tracks(torch.utils.data.Dataset):
    def __init__(self, mix: torch.Tensor, stems: torch.Tensor):
        self.mix, self.stems = mix, stems

    def __len__(self) -> int:
        return len(self.mix)

    def __getitem__(self, i: int):
        return self.mix[i], self.stems[i]


def test_validation_batch_equals_score(corpus_root, tmp_path):
    """Two whole tracks in one validation batch, every metric on the batch at once, logged as
    valid/<metric>_<source> and valid/<metric>: the means `stemsep score` gives on the same audio."""
    sources = ["drums", "bass", "other", "vocals"]
    songs = sorted((corpus_root / "test").iterdir())
    stems = torch.stack([torch.stack([read_audio(song / f"{s}.wav")[0] for s in sources]) for song in songs])
    mix = stems.sum(1)
    torch.manual_seed(0)
    module = SeparationModule(TinyNet(sources), metrics=ALL)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = torch.utils.data.DataLoader(_Tracks(mix, stems), batch_size=2)
    logged = trainer.validate(module, loader, verbose=False)[0]
    with torch.no_grad():
        estimates = module.separate(mix)
    for song, est in zip(songs, estimates):
        for j, source in enumerate(sources):
            write_audio(tmp_path / "est" / song.name / f"{source}.wav", est[j], 44100, bits=32)
    # the mixture `score` reads is mixture.wav: the corpus writes it as the exact sum of the stems
    summary = score(corpus_root / "test", tmp_path / "est", metrics=ALL)
    for metric in ALL:
        for source in sources:
            assert logged[f"valid/{metric}_{source}"] == pytest.approx(summary["sources"][source][metric]["mean"],
                                                                       rel=1e-4, abs=1e-6), (metric, source)
        assert logged[f"valid/{metric}"] == pytest.approx(summary["all"][metric]["mean"], rel=1e-4, abs=1e-6)


def test_metric_state_averages_tracks_over_batches(msst):
    est, ref, mix = _tensors(msst[0]["stereo"])
    metric = CommunityMetrics(["usdr", "fullness"], num_sources=3)
    metric.update(est[None], ref[None], mix[None], 44100)
    metric.update(torch.stack([est, 0.5 * est]), torch.stack([ref, ref]), torch.stack([mix, mix]), 44100)
    values = [community_metrics(["usdr", "fullness"], e, ref, mix, 44100) for e in (est, est, 0.5 * est)]
    result = metric.compute()
    for name in ("usdr", "fullness"):
        torch.testing.assert_close(result[name], torch.stack([v[name] for v in values]).mean(0).float())


def test_stemsep_test_writes_community_metrics(corpus_root, tmp_path):
    """`model.test_metrics` takes the community's names too: `stemsep test`'s per-track results hold them."""
    sources = ["drums", "bass", "other", "vocals"]
    song = sorted((corpus_root / "test").iterdir())[0]
    stems = torch.stack([read_audio(song / f"{s}.wav")[0] for s in sources])
    module = SeparationModule(TinyNet(sources), test_metrics=["sdr", "usdr", "bleedless"],
                              test_results_dir=str(tmp_path / "results"))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.test(module, torch.utils.data.DataLoader(_Tracks(stems.sum(0)[None], stems[None]), batch_size=1),
                 verbose=False)
    record = json.loads((tmp_path / "results" / "track00000.json").read_text())
    with torch.no_grad():
        est = module.separate(stems.sum(0)[None])[0]
    expected = community_metrics(["usdr", "bleedless"], est, stems, stems.sum(0), 44100)
    for j, target in enumerate(record["targets"]):
        assert set(target["frames"][0]["metrics"]) == {"SDR"}
        assert target["usdr"] == pytest.approx(float(expected["usdr"][j]), rel=1e-6)
        assert target["bleedless"] == pytest.approx(float(expected["bleedless"][j]), rel=1e-4)


@pytest.mark.slow  # a whole `stemsep fit` with a W&B run: ~25 s
def test_recipe_validates_monitors_and_logs_them_to_wandb(shards, tmp_path, monkeypatch):
    """`model.metrics` in a recipe (stemsep fit, as typed): ModelCheckpoint monitors valid/bleedless
    and the W&B run (offline) records every valid/<name>."""
    import sys

    from helpers import REPO
    from helpers.recipes import tiny_overrides

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), *tiny_overrides(shards, tmp_path / "run"),
            "--model.metrics", "[usdr, bleedless]", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1",
            "--trainer.callbacks.init_args.monitor", "valid/bleedless", "--trainer.callbacks.init_args.mode", "max",
            "--trainer.callbacks.init_args.save_top_k", "1", "--trainer.callbacks.dirpath", str(tmp_path / "ckpt"),
            "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.logger.init_args.offline", "true"]
    try:
        assert main(args) == 0
    finally:
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()
    best = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    state = next(v for k, v in best.items() if k.startswith("ModelCheckpoint"))
    assert state["monitor"] == "valid/bleedless" and 0 < float(state["best_model_score"]) <= 100
    runs = list((tmp_path / "logs").rglob("run-*.wandb"))  # the offline run's records (protobuf, keys as text)
    assert len(runs) == 1
    deadline = time.monotonic() + 60  # W&B's service writes the run file behind the run's finish()
    while b"valid/usdr" not in (recorded := runs[0].read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for name in ("valid/usdr", "valid/bleedless", "valid/usdr_vocals", "valid/bleedless_drums"):
        assert name.encode() in recorded, name


def _noisy_stems(seconds: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {s: (0.1 * rng.standard_normal((2, int(44100 * seconds)))).astype(np.float32)
            for s in ("drums", "bass", "other", "vocals")}


def test_log_wmse_reads_the_tracks_mixture(tmp_path, capsys):
    """`score` hands log_wmse the track's mixture: the .stem.mp4's mixture stream, mixture.wav, or
    (without one) the sum of every reference stem, scored or not; a mixture of another length is a
    one-line error."""
    pytest.importorskip("av")
    from helpers.stem_mp4 import write_stem_mp4
    from stemsep.io.audio import STEM_MP4_STREAMS, read_stream

    stems = _noisy_stems()
    mp4 = write_stem_mp4(tmp_path / "mp4" / "song.stem.mp4", [sum(stems.values()), *stems.values()])
    folder = tmp_path / "wav" / "song"
    for source, wav in stems.items():
        write_audio(folder / f"{source}.wav", torch.from_numpy(wav), 44100, bits=32)
        write_audio(tmp_path / "est" / "song" / f"{source}.wav", torch.from_numpy(0.9 * wav), 44100, bits=32)

    def logged(refs: Path, *extra: str) -> float:
        assert main(["score", "--references", str(refs), "--estimates", str(tmp_path / "est"), "--metrics",
                     "log_wmse", "--sources", "vocals", "-o", str(tmp_path / "out"), *extra]) == 0
        return json.loads((tmp_path / "out" / "song.json").read_text())["targets"][0]["log_wmse"]

    def expected(ref: torch.Tensor, mix: torch.Tensor) -> float:
        est = read_audio(tmp_path / "est" / "song" / "vocals.wav")[0]
        return float(community_metrics(["log_wmse"], est[None], ref[None], mix, 44100)["log_wmse"][0])

    vocals_mp4 = read_stream(mp4, STEM_MP4_STREAMS["vocals"])[0]
    assert logged(tmp_path / "mp4") == pytest.approx(
        expected(vocals_mp4, read_stream(mp4, STEM_MP4_STREAMS["mixture"])[0]), rel=1e-9)
    all_stems = torch.from_numpy(sum(stems.values()))
    vocals = torch.from_numpy(stems["vocals"])
    no_mixture = logged(tmp_path / "wav")
    assert no_mixture == pytest.approx(expected(vocals, all_stems), rel=1e-9)
    assert no_mixture != pytest.approx(expected(vocals, vocals), rel=1e-3)  # not the scored stems' sum
    write_audio(folder / "mixture.wav", 0.5 * all_stems, 44100, bits=32)
    assert logged(tmp_path / "wav") == pytest.approx(expected(vocals, 0.5 * all_stems), rel=1e-9)
    write_audio(folder / "mixture.wav", all_stems[:, :-10], 44100, bits=32)
    capsys.readouterr()
    assert main(["score", "--references", str(tmp_path / "wav"), "--estimates", str(tmp_path / "est"),
                 "--metrics", "log_wmse"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "mixture.wav: mixture is (2, 44090)" in err and err.startswith("stemsep: error:")


def test_a_missing_package_is_a_one_line_error(monkeypatch):
    import sys

    community._log_wmse_filter.cache_clear()
    monkeypatch.setitem(sys.modules, "torch_log_wmse", None)  # as if not installed
    try:
        with pytest.raises(StemsepError, match=r"^the log_wmse metric needs the torch-log-wmse package, which is "
                                               r"not installed: pip install torch-log-wmse$"):
            community_metrics(["log_wmse"], torch.zeros(2, 2, 4410), torch.zeros(2, 2, 4410), None, 44100)
    finally:
        community._log_wmse_filter.cache_clear()


def test_audio_shorter_than_an_stft_is_a_one_line_error():
    from stemsep.errors import StemsepError
    from stemsep.evaluation.community import community_metrics

    short = torch.randn(1, 2, 2, 1500)
    values = community_metrics(["l1_freq", "usdr"], short, short * 0.9, None, 44100)  # 1500 > 1024: fine
    assert values["l1_freq"].shape == (1, 2)
    with pytest.raises(StemsepError, match="bleedless: needs at least 2049 samples"):
        community_metrics(["bleedless"], short, short * 0.9, None, 44100)
