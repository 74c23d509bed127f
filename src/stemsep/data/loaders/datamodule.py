"""``StemDataModule``: training and evaluation data streamed from ``stemsep shard`` output.

Batches (the same contract as the folder data module):

- training: ``(mix (B, C, T), stems (B, S, C, T))`` float32, ``mix == stems.sum(1)`` after
  augmentation, ``T = segment * samplerate``; an endless, seeded, per-(rank, worker) stream;
- validation / test: ``(mix (1, C, T), stems (1, S, C, T), [name])``, whole songs, each song
  exactly once across all ranks and workers.

Sources follow the ``sources`` option (order, selection, or a mapping that sums stems; stem groups
and derived targets such as ``instrumental``); the mixture is the sum of *all* the song's stored
stems (``full_mix``), so a one-stem model learns vocals from the whole song.

**The data follows the network.** ``sources``, ``segment`` and ``samplerate`` left unset are the
network's: ``stemsep fit`` fills them from ``model.net`` (they show in ``--print_config``;
:mod:`stemsep.training.linking`), and from Python :meth:`StemDataModule.follow_network` does. Set
and different from the network's, sources and sample rate are a one-line error; so is the segment
when fitting a network that pads its inputs to its training segment (HT Demucs). Other networks
may train on a segment of their own (Hybrid Demucs' ``segment`` is only its inference chunk). A
network without a ``segment`` trains on :data:`DEFAULT_SEGMENT` (10 s) unless ``segment`` is set.

Shards may be local (paths, globs, brace patterns), behind ``pipe:`` commands, or remote
(``s3://``, ``gs://``, ``http(s)://``...): see :mod:`stemsep.data.shards.tarstream`; remote reads
retry and resume after network faults (:mod:`stemsep.io.remote`).
"""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from stemsep.contract import segment_of, uses_train_segment
from stemsep.data.augment import Augmentation, bind_augmentations
from stemsep.data.corpus.synth import SyntheticCorpus
from stemsep.data.loaders.streams import EvalStream, TrainStream
from stemsep.data.shards.manifest import Manifest, output_names, resolve_sources
from stemsep.data.shards.prepare import PrepareShards, prepare_shards
from stemsep.data.shards.tarstream import local_path, read_json
from stemsep.errors import BadDataError, StemsepError
from stemsep.io.remote import Retry

# The training segment (seconds) of a data module whose network has none and that sets none itself.
DEFAULT_SEGMENT = 10.0


def source_names(option: list[str] | dict[str, list[str]]) -> list[str]:
    """The source names a ``sources`` option gives (a mapping's keys)."""
    return [str(name) for name in (option.keys() if isinstance(option, dict) else option)]


def sources_differ(given: list[str], network: list[str]) -> str:
    """The one-line error of data sources that are not the network's."""
    return (f"data.init_args.sources {given} differ from model.net's sources {network}: the data follows the "
            "network; leave data.init_args.sources unset, or give the same names in the same order")


def segment_differs(given: float, network: float) -> str:
    """The one-line error of a data segment other than the training segment of a network that pads to it."""
    return (f"data.init_args.segment {given:g} s differs from model.net's segment {network:g} s: the network "
            "pads its inputs to its training segment; set model.net.init_args.segment alone (the data follows it)")


def samplerate_differs(given: int, network: int) -> str:
    """The one-line error of a data sample rate other than the network's."""
    return (f"data.init_args.samplerate {given} differs from model.net's samplerate {network}: the data follows "
            "the network; leave data.init_args.samplerate unset")


def check_train_segment(net, segment: float | None, fitting: bool) -> None:
    """Refuse (one line) fitting a network that pads its inputs to its training segment on another
    ``segment`` (seconds; within one sample counts as the same)."""
    net_segment = segment_of(net)
    if (fitting and segment is not None and net_segment is not None and uses_train_segment(net)
            and abs(float(net_segment) - float(segment)) * int(net.samplerate) >= 1):
        raise StemsepError(segment_differs(float(segment), float(net_segment)))


class StemDataModule(L.LightningDataModule):
    """Streams multitrack songs from WebDataset shards described by manifests.

    Args:
        train_manifest / valid_manifest / test_manifest: ``<split>.json`` written by
            ``stemsep shard`` (path or URL); ``None`` disables the split.
        train_shards / valid_shards / test_shards: shard URLs or patterns; default: the
            manifest's shards in the manifest's folder. Each must be listed in the manifest.
        sources: output sources: a list (pick and order stems, groups of ``stem_groups``, or derived
            targets ``instrumental`` = every stem but vocals, ``no_<stem>``) or a mapping
            ``{name: [stems...]}`` (``rest``: the stems no other source names); default the network's
            (``stemsep fit`` sets it, :meth:`follow_network`), else the shards' stems (or groups).
        stem_groups: ``{group: [stored stems...]}`` summed at load time, e.g. ``{piano: [piano],
            guitar: [guitar], other: [rest]}``: 4-, 6- or one-stem models from one shard set
            (``stemsep shard --layout moisesdb --sources all`` keeps every stem type).
        full_mix: the mixture is the sum of all the song's stored stems, also those no source uses
            (default); ``false``: the sum of the sources only.
        segment: training segment length in seconds; default the network's ``segment``
            (``stemsep fit`` sets it, :meth:`follow_network`), else :data:`DEFAULT_SEGMENT` (10 s).
        samplerate: the sample rate the shards must have (a one-line error otherwise); default
            the network's (``stemsep fit`` sets it), else the shards' own. Training augmentations
            take this rate (none of them states one).
        batch_size: training batch size (per rank).
        num_workers: DataLoader workers per rank (evaluation uses at most this many).
        segments_per_song: random segments cut from each decoded song.
        song_buffer: encoded songs held for shuffling before decoding.
        shuffle: segments held in the shuffle buffer.
        augmentations: training augmentations (:mod:`stemsep.data.augment`), in order.
        epoch_batches: training batches per epoch per rank (``None``: endless stream, bound
            epochs with the trainer's ``limit_train_batches``).
        seed: base seed; streams differ by rank, worker and epoch.
        keep_list: JSON from ``stemsep audit``; training keeps only its ``keep`` songs.
        policy: ``raise`` (stop) or ``warn`` (skip and count) on corrupt training data, and on a
            remote training shard still failing after ``retries`` (validation and test always raise).
        verify_sha: compare each shard's sha256 with the manifest while streaming.
        pin_memory: DataLoader ``pin_memory``.
        tune_malloc: in the process that streams training batches (a DataLoader worker, or
            the main process with ``num_workers: 0``), keep large freed buffers for reuse
            instead of returning them to the system (:mod:`stemsep.data.loaders.allocator`: glibc
            only; ~20 % faster, keeps up to 512 MB of freed memory).
        retries: remote reads (``http(s)://``, ``s3://``, ...): failed attempts in a row retried
            (resuming where the stream stopped) before the shard counts as failed.
        timeout: remote reads: seconds a connect or read may wait for data before the attempt fails.
        backoff: remote reads: seconds before the first retry, doubled for each further one.
        prepare: shard a dataset folder on first use (:class:`~stemsep.data.shards.prepare.PrepareShards`,
            optionally generating a synthetic corpus); manifests left unset then default to
            the prepared ones. ``prepare_data`` does the work once, on local rank 0.
        synthetic: with ``prepare``, generate a synthetic corpus at a missing ``prepare.root``
            first (:class:`~stemsep.data.loaders.folder.SyntheticCorpus` settings).

    Data workers run with one torch thread (PyTorch sets this in DataLoader workers), which
    is what the augmentations are tuned for.
    """

    def __init__(self, train_manifest: str | None = None, valid_manifest: str | None = None,
                 test_manifest: str | None = None, train_shards: str | list[str] | None = None,
                 valid_shards: str | list[str] | None = None, test_shards: str | list[str] | None = None,
                 sources: list[str] | dict[str, list[str]] | None = None,
                 stem_groups: dict[str, list[str]] | None = None, full_mix: bool = True,
                 segment: float | None = None, samplerate: int | None = None, batch_size: int = 4, num_workers: int = 2,
                 segments_per_song: int = 4, song_buffer: int = 4, shuffle: int = 64,
                 augmentations: list[Augmentation] | None = None, epoch_batches: int | None = 1000, seed: int = 0,
                 keep_list: str | None = None,
                 policy: Literal["raise", "warn"] = "raise", verify_sha: bool = True, pin_memory: bool = False,
                 prepare: PrepareShards | None = None, synthetic: SyntheticCorpus | None = None,
                 tune_malloc: bool = True, retries: int = 5, timeout: float = 60.0, backoff: float = 1.0):
        super().__init__()
        self.manifests = {"train": train_manifest, "valid": valid_manifest, "test": test_manifest}
        self.prepare, self.synthetic = prepare, synthetic
        if prepare is not None:
            self.manifests = {role: url if url is not None else prepare.manifest(role)
                              for role, url in self.manifests.items()}
        self.shard_patterns = {"train": train_shards, "valid": valid_shards, "test": test_shards}
        self.source_option, self.stem_groups, self.full_mix = sources, stem_groups, bool(full_mix)
        self.segment_option = None if segment is None else float(segment)
        self.samplerate_option = None if samplerate is None else int(samplerate)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.segments_per_song, self.song_buffer, self.shuffle = segments_per_song, song_buffer, shuffle
        self.augmentations = list(augmentations or [])
        self.epoch_batches, self.seed, self.keep_list = epoch_batches, seed, keep_list
        self.policy, self.verify_sha, self.pin_memory = policy, verify_sha, pin_memory
        self.tune_malloc = bool(tune_malloc)
        self.retry = Retry(retries=int(retries), timeout=float(timeout), backoff=float(backoff))
        self._loaded: dict[str, Manifest] = {}
        if prepare is None:
            self._check_local_manifests()

    def _check_local_manifests(self) -> None:
        """A local manifest that does not exist is an error now, before the trainer, the logger and
        the network start, naming the key, how to make the shards and how to try without them."""
        for role, url in self.manifests.items():
            path = None if url is None else local_path(url)
            if path is not None and not os.path.exists(path):
                folder = os.path.dirname(path) or "."
                raise BadDataError(
                    f"data.init_args.{role}_manifest: {url}: not found. Make the shards with `stemsep shard "
                    f"--layout musdb --root <your MUSDB18-HQ folder> --out {folder}` (docs/data.md), set "
                    f"data.init_args.{role}_manifest to your own manifest (null: no {role} split), or try "
                    "the recipe on the synthetic corpus: --data configs/data/synthetic.yaml")

    def follow_network(self, net, fitting: bool = True) -> None:
        """Take ``net``'s sources, segment and sample rate where this data module sets none; one-line
        error where it sets them otherwise (the segment: only when ``fitting`` a network that pads its
        inputs to its training segment). The training augmentations get the sample rate."""
        sources = [str(s) for s in net.sources]
        if self.source_option is None:
            self.source_option = sources
        elif source_names(self.source_option) != sources:
            raise StemsepError(sources_differ(source_names(self.source_option), sources))
        rate = int(net.samplerate)
        if self.samplerate_option is None:
            self.samplerate_option = rate
        elif self.samplerate_option != rate:
            raise StemsepError(samplerate_differs(self.samplerate_option, rate))
        if self.prepare is not None and int(self.prepare.samplerate) != rate:
            raise StemsepError(f"data.init_args.prepare.samplerate {self.prepare.samplerate} differs from "
                               f"model.net's samplerate {rate}: set data.init_args.prepare.samplerate {rate} "
                               "(the shards are made at it)")
        segment = segment_of(net)
        if self.segment_option is None:
            self.segment_option = DEFAULT_SEGMENT if segment is None else float(segment)
        else:
            check_train_segment(net, self.segment_option, fitting)
        bind_augmentations(self.augmentations, rate)

    @property
    def segment(self) -> float:
        """The training segment in seconds (``segment``, else :data:`DEFAULT_SEGMENT`)."""
        return DEFAULT_SEGMENT if self.segment_option is None else self.segment_option

    def prepare_data(self) -> None:
        if self.prepare is not None:
            option = self.source_option
            stems = None if option is None else (
                list(dict.fromkeys(s for v in option.values() for s in ([v] if isinstance(v, str) else v)))
                if isinstance(option, dict) else list(option))
            prepare_shards(self.prepare, stems, self.synthetic)

    # -- what the model needs to know -------------------------------------------------------
    def manifest(self, split: str) -> Manifest:
        if split not in self._loaded:
            url = self.manifests.get(split)
            if url is None:
                raise BadDataError(f"data: no {split}_manifest configured")
            manifest = Manifest.load(url, self.retry)
            if self.samplerate_option is not None and manifest.samplerate != self.samplerate_option:
                raise BadDataError(f"data.init_args.{split}_manifest: {url} holds {manifest.samplerate} Hz audio, "
                                   f"the network takes {self.samplerate_option} Hz (data.init_args.samplerate): "
                                   f"shard the songs at {self.samplerate_option} Hz or train a network for "
                                   f"{manifest.samplerate} Hz")
            self._loaded[split] = manifest
        return self._loaded[split]

    @property
    def _any_manifest(self) -> Manifest:
        split = next((s for s, url in self.manifests.items() if url), None)
        if split is None:
            raise BadDataError("data: give at least one of train_manifest, valid_manifest, test_manifest")
        return self.manifest(split)

    @property
    def sources(self) -> list[str]:
        return output_names(self._mapping(self._any_manifest))

    def _mapping(self, manifest: Manifest) -> dict[str, list[str]]:
        return resolve_sources(manifest, self.source_option, stem_groups=self.stem_groups, full_mix=self.full_mix)

    @property
    def samplerate(self) -> int:
        return self._any_manifest.samplerate

    @property
    def channels(self) -> int:
        return self._any_manifest.channels

    # -- datasets ---------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _checked(self, split: str) -> tuple[Manifest, list[tuple[str, str]], dict[str, list[str]]]:
        manifest = self.manifest(split)
        reference = self._any_manifest
        if (manifest.samplerate, manifest.channels) != (reference.samplerate, reference.channels):
            raise BadDataError(f"{manifest.url}: {manifest.samplerate} Hz / {manifest.channels} ch differs from "
                               f"{reference.url} ({reference.samplerate} Hz / {reference.channels} ch)")
        return manifest, manifest.shard_urls(self.shard_patterns[split]), self._mapping(manifest)

    def train_dataset(self, rank: int | None = None, world_size: int | None = None) -> TrainStream:
        """The training stream of ``rank`` (default: the trainer's)."""
        manifest, shards, mapping = self._checked("train")
        default_rank, default_world = self._rank()
        keep = None
        if self.keep_list is not None:
            data = read_json(self.keep_list, self.retry)
            if not isinstance(data, dict) or not isinstance(data.get("keep"), list):
                raise BadDataError(f"{self.keep_list}: not a keep-list (expected a JSON object with a 'keep' list)")
            keep = set(data["keep"])
        epoch = int(getattr(getattr(self, "trainer", None), "current_epoch", 0) or 0)
        dataset = TrainStream(
            manifest, shards, mapping, segment=round(self.segment * manifest.samplerate),
            batch_size=self.batch_size, augmentations=self.augmentations,
            segments_per_song=self.segments_per_song, song_buffer=self.song_buffer, shuffle=self.shuffle,
            seed=self.seed, keep=keep, policy=self.policy, verify_sha=self.verify_sha,
            epoch_batches=self.epoch_batches, tune_malloc=self.tune_malloc, rank=default_rank if rank is None else rank,
            world_size=default_world if world_size is None else world_size, retry=self.retry)
        dataset.epoch = epoch  # a resumed run continues with new data, not epoch 0's
        return dataset

    def eval_dataset(self, split: str, rank: int | None = None, world_size: int | None = None) -> EvalStream:
        """Whole-song stream of ``split`` (``valid`` or ``test``) for ``rank``."""
        manifest, shards, mapping = self._checked(split)
        default_rank, default_world = self._rank()
        return EvalStream(manifest, shards, mapping, verify_sha=self.verify_sha, retry=self.retry,
                          rank=default_rank if rank is None else rank,
                          world_size=default_world if world_size is None else world_size)

    # -- Lightning hooks --------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset(), self.num_workers)

    def val_dataloader(self) -> DataLoader:
        dataset = self.eval_dataset("valid")
        return self._loader(dataset, min(self.num_workers, len(dataset.songs)))

    def test_dataloader(self) -> DataLoader:
        dataset = self.eval_dataset("test")
        return self._loader(dataset, min(self.num_workers, len(dataset.songs)))

    def _loader(self, dataset, workers: int) -> DataLoader:
        return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=self.pin_memory,
                          persistent_workers=workers > 0 and isinstance(dataset, TrainStream))
