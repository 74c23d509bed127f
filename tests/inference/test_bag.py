"""``stemsep bag``: per-source bags of fine-tuned models that separate and test accept; and the
paper's workflow end to end: fine-tune per source (recipe) -> bag -> ``stemsep test``."""

import json

import torch

from helpers import REPO, TinyNet
from helpers.recipes import save_tiny, tiny_overrides
from stemsep.cli import main
from stemsep.contract import network_config
from stemsep.inference.bag import BagOfModels
from stemsep.io import FromCheckpoint
from stemsep.io.checkpoint import load_checkpoint, load_separator, save_checkpoint


def test_bag_weights_matrix_and_errors(tmp_path, capsys):
    a, b = save_tiny(tmp_path / "a.ckpt", 1), save_tiny(tmp_path / "b.ckpt", 2)
    out = tmp_path / "bag.ckpt"
    assert main(["bag", "--models", str(a), str(b), "--weights", "1,1,1,0", "0,0,0,1", "-o", str(out)]) == 0
    bag = load_separator(out)
    assert isinstance(bag, BagOfModels) and bag.weights == [[1, 1, 1, 0], [0, 0, 0, 1]]
    mix = torch.randn(1, 2, 512)
    est_a, est_b = load_separator(a)(mix), load_separator(b)(mix)
    with torch.no_grad():
        assert torch.allclose(bag(mix), torch.cat([est_a[:, :3], est_b[:, 3:]], 1), atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # atomic write: no temporary left
    # Refusals: existing output, wrong counts, mismatched sources, bad weights.
    assert main(["bag", "--models", str(a), "-o", str(out)]) == 2
    assert main(["bag", "--models", str(a), str(b), "--per-source", "-o", str(tmp_path / "x.ckpt")]) == 2
    assert main(["bag", "--models", str(a), str(b), "--weights", "1,0", "0,1", "-o", str(tmp_path / "y.ckpt")]) == 2
    other = tmp_path / "two.ckpt"
    save_checkpoint(other, TinyNet(["drums", "vocals"]), network_config(TinyNet(["drums", "vocals"])))
    assert main(["bag", "--models", str(a), str(other), "-o", str(tmp_path / "z.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "2 model(s) for 4 sources" in err and "has 2 value(s)" in err
    assert f"{other}: sources ['drums', 'vocals'] differs" in err
    assert not (tmp_path / "x.ckpt").exists() and not (tmp_path / "y.ckpt").exists()


def test_fine_tune_per_source_then_bag_then_test(shards, corpus_root, tmp_path, capsys):
    """recipes/htdemucs_ft.yaml once per source -> stemsep bag --per-source -> stemsep test / separate.

    Two sources (the data module picks the drums and vocals stems) keep it to two
    fine-tuning runs; the four-source path is the same code.
    """
    sources = ["drums", "vocals"]
    as_list = "[" + ", ".join(sources) + "]"
    torch.manual_seed(0)
    pretrained = tmp_path / "pretrained.ckpt"
    save_checkpoint(pretrained, TinyNet(sources), network_config(TinyNet(sources)))
    two_sources = ["--model.net.init_args.sources", as_list, "--data.init_args.sources", as_list]
    recipe = str(REPO / "recipes" / "htdemucs_ft.yaml")
    finetuned = []
    for index, source in enumerate(sources):
        weights = "[" + ", ".join("1" if i == index else "0" for i in range(len(sources))) + "]"
        run = tmp_path / "ft" / source
        assert main(["fit", "--config", recipe, *tiny_overrides(shards, run), *two_sources,
                     "--model.init_from", str(pretrained), "--model.source_weights", weights,
                     "--trainer.max_steps", "2", "--data.init_args.epoch_batches", "2",
                     "--trainer.limit_val_batches", "1", "--trainer.logger=null",
                     "--trainer.callbacks.dirpath", str(run)]) == 0
        last = run / "last.ckpt"
        ckpt = load_checkpoint(last)
        assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["source_weights"][index] == 1
        finetuned.append(last)
    start = load_separator(pretrained).state_dict()
    tuned = [load_separator(path) for path in finetuned]
    assert all(any(not torch.equal(net.state_dict()[k], v) for k, v in start.items()) for net in tuned)

    bag_file = tmp_path / "htdemucs_ft.ckpt"
    assert main(["bag", "--models", *map(str, finetuned), "--per-source", "-o", str(bag_file)]) == 0
    bag = load_separator(bag_file)
    mix = torch.randn(1, 2, 1024)
    with torch.no_grad():
        expected = torch.stack([net(mix)[:, i] for i, net in enumerate(tuned)], 1)
        assert torch.allclose(bag(mix), expected, atol=1e-6)  # source i comes from model i
        assert isinstance(FromCheckpoint(checkpoint=str(bag_file)), BagOfModels)

    results = tmp_path / "results"
    assert main(["test", "--config", str(REPO / "recipes" / "eval.yaml"), *tiny_overrides(shards, tmp_path / "eval"),
                 "--data.init_args.sources", as_list,
                 "--model.net", "stemsep.io.FromCheckpoint", "--model.net.checkpoint", str(bag_file),
                 "--model.test_results_dir", str(results)]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert "test nSDR (dB)" in capsys.readouterr().out
    assert len(list(results.glob("song*.json"))) == 2 and summary

    song = next((corpus_root / "test").iterdir()) / "mixture.wav"
    assert main(["separate", str(song), "--model", str(bag_file), "-o", str(tmp_path / "sep")]) == 0
    assert sorted(p.stem for p in (tmp_path / "sep" / song.parent.name).iterdir()) == sorted(sources)
