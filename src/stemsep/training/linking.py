"""The data follows the network: ``data.init_args.sources``, ``segment`` and ``samplerate`` come from
``model.net``.

The network is the one place a run states its sources, training segment and sample rate; the data
module's keys of the same names, left unset (``null``), take the network's values. Twice:

* on the **config** (:func:`link_config`), before anything is built: from ``model.net.init_args``
  (``sources``, ``segment``, ``samplerate`` or the Mel-Band RoFormer's ``sample_rate``), so that
  ``--print_config`` and the ``config.yaml`` a run saves show the values the data will use. A data
  key set to another value than the network's is a one-line error for ``sources`` and
  ``samplerate``; a different ``segment`` is kept (see below).
* on the **built objects** (:func:`link_data`), after jsonargparse built them: from the network's own
  attributes, which also covers networks whose config does not state them (``stemsep.io.FromCheckpoint``,
  user networks): the data module's :meth:`~stemsep.data.loaders.StemDataModule.follow_network`
  fills what is still unset and checks the rest; it also gives the training augmentations the rate.

Why not jsonargparse's ``link_arguments``: its targets can be neither given nor printed (a linked
key leaves ``--print_config``, and setting it is an error), and its sources must be config keys,
which a network built from a checkpoint does not have.

The segment: the data's ``segment`` is the training length. A network that pads its inputs to its
training segment (HT Demucs, ``use_train_segment``) must get exactly that length when fitting (a
different one is a one-line error); other networks may train on a segment of their own (Hybrid
Demucs' ``segment`` is its inference chunk: ``recipes/hdemucs.yaml`` trains it on 7.8 s). A network
without a ``segment`` trains on ``data.init_args.segment`` or, unset, 10 s
(:data:`~stemsep.data.loaders.datamodule.DEFAULT_SEGMENT`), with a note.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from stemsep.contract import segment_of
from stemsep.data.loaders.datamodule import (
    DEFAULT_SEGMENT,
    check_train_segment,
    samplerate_differs,
    source_names,
    sources_differ,
)
from stemsep.errors import StemsepError

# data.init_args key -> the model.net.init_args keys it is linked from (the first one present).
LINKS = {"sources": ("sources",), "segment": ("segment",), "samplerate": ("samplerate", "sample_rate")}


def _get(namespace: Any, key: str) -> Any:
    try:
        return namespace.get(key) if namespace is not None else None
    except (AttributeError, TypeError, KeyError):
        return None


def _has(namespace: Any, key: str) -> bool:
    try:
        return namespace is not None and key in namespace
    except TypeError:
        return False


def _plain(value: Any) -> Any:
    as_dict = getattr(value, "as_dict", None)
    return as_dict() if callable(as_dict) else value


def network_facts(net_config: Any) -> dict[str, Any]:
    """The sources, segment and sample rate a ``model.net`` config states (``{}`` where none)."""
    init_args = _get(net_config, "init_args")
    facts = {}
    for key, names in LINKS.items():
        for name in names:
            value = _get(init_args, name)
            if value is not None:
                facts[key] = list(value) if key == "sources" else value
                break
    return facts


def link_config(config: Any) -> None:
    """Fill the unset ``data.init_args`` keys of :data:`LINKS` from ``model.net.init_args`` (in place);
    one-line error where data sources or sample rate are set to other values than the network's.

    Only keys the data module takes are linked (any ``LightningDataModule`` may be the data)."""
    facts = network_facts(_get(config, "model.net"))
    data_args = _get(_get(config, "data"), "init_args")
    for key, value in facts.items():
        if not _has(data_args, key):
            continue
        given = data_args[key]
        if given is None:
            data_args[key] = float(value) if key == "segment" else value
        elif key == "sources" and source_names(_plain(given)) != [str(s) for s in value]:
            raise StemsepError(sources_differ(source_names(_plain(given)), [str(s) for s in value]))
        elif key == "samplerate" and int(given) != int(value):
            raise StemsepError(samplerate_differs(given, value))


@rank_zero_only
def note(message: str) -> None:
    print(f"stemsep: note: {message}", file=sys.stderr, flush=True)


def link_data(net: Any, data: Any, fitting: bool) -> None:
    """The built data module follows the built network: its ``follow_network(net, fitting)`` if it has
    one (:class:`~stemsep.data.loaders.StemDataModule`); otherwise the ``sources`` and ``segment``
    it exposes are checked against the network's (one-line errors, as ``follow_network``)."""
    if data is None:
        return
    follow = getattr(data, "follow_network", None)
    if callable(follow):
        unset = getattr(data, "segment_option", ...) is None
        follow(net, fitting=fitting)
        if fitting and unset and segment_of(net) is None:
            note(f"model.net has no segment: training on {DEFAULT_SEGMENT:g} s segments (the default of "
                 "data.init_args.segment); set data.init_args.segment, or give the network a segment")
        return
    try:
        data_sources = getattr(data, "sources", None)
    except (StemsepError, OSError, ValueError):  # no manifest yet: the data module reports it itself
        data_sources = None
    sources = [str(s) for s in net.sources]
    if data_sources is not None and source_names(data_sources) != sources:
        raise StemsepError(sources_differ(source_names(data_sources), sources))
    check_train_segment(net, getattr(data, "segment", None), fitting)
