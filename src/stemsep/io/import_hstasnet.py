"""What ``stemsep import-checkpoint --model-type hstasnet`` needs beyond the MSST defaults.

The reference HS-TasNet (``hs-tasnet`` on PyPI, github.com/lucidrains/hs-tasnet) saves its network
with ``HSTasNet.save`` (its ``Trainer`` does so every epoch: ``hs-tasnet.ckpt.<n>.pt``, and
``hs_tasnet.ema.ckpt.<n>.pt`` for the EMA weights): ``torch.save({"model": state_dict, "config":
pickle.dumps(constructor keywords)})``. Its own ``init_and_load_from`` unpickles ``config``, which can
run any code the file carries. Here:

* the package is read like every checkpoint, ``torch.load(weights_only=True)`` (``config`` is plain
  ``bytes`` to that loader); the weights are ``model`` (:data:`HSTASNET_WRAPPER_KEYS`), or the file is a
  plain ``state_dict``;
* the constructor keywords come from the user's YAML (``--config``): a ``model:`` mapping of the
  reference's keywords (``dim``, ``small``, ``overlap_len``, ...) and optionally ``training:
  instruments`` (:func:`hstasnet_config_sections` makes MSST's sections of it);
* ``config`` is only checked against them (:func:`recorded_kwargs`): read by an unpickler that
  constructs plain values only (dicts, lists, strings, numbers, booleans, None) and refuses every
  global (a class, a function: code), so a keyword that no weight's shape shows (``overlap_len``,
  ``sample_rate``) cannot silently differ from what the network was trained with.

The sources: the reference's ``Trainer`` reads MUSDB18 through the ``musdb`` package, whose stems are
drums, bass, other, vocals (stemsep's default order). Its ``MusDB18HQ`` folder dataset orders them
drums, bass, vocals, other: networks trained on it need ``training: instruments: [drums, bass, vocals,
other]`` in the YAML.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from stemsep.contract import default_source_names
from stemsep.errors import BadCheckpointError

# The reference's package keeps the weights under "model"; a plain state_dict has no such key.
HSTASNET_WRAPPER_KEYS = ("model", "state_dict")
# Recorded keywords that say nothing about the weights: compiling is the user's business.
IGNORED_RECORDED = ("torch_compile",)


def hstasnet_config_sections(data: dict[str, Any]) -> dict[str, Any]:
    """A YAML with the reference's keywords under ``model:`` as MSST's sections: ``audio`` from
    ``model.sample_rate`` and ``model.stereo`` (the reference's defaults, 44100 and stereo, where
    unset), ``training`` as given (``instruments``; default stemsep's sources for the network's
    count). An MSST config (it has ``audio:``) is returned as it is."""
    if "audio" in data:
        return data
    model = data.get("model")
    if not isinstance(model, dict):
        raise BadCheckpointError("no 'model:' mapping of HSTasNet keywords (dim, small, overlap_len, ...)")
    audio = {"sample_rate": int(model.get("sample_rate", 44100)), "num_channels": 2 if model.get("stereo", True) else 1}
    training = data.get("training") if isinstance(data.get("training"), dict) else {}
    if not training.get("instruments") and not training.get("target_instrument"):
        training = {**training, "instruments": default_sources(model)}
    return {**data, "audio": audio, "training": training}


def default_sources(model: dict[str, Any]) -> list[str]:
    """``model.sources`` when given, else the names HSTasNet gives ``num_sources`` (default 4) stems."""
    if model.get("sources"):
        return list(model["sources"])
    return default_source_names(model.get("num_sources") or None)  # as HSTasNet names them


class _PlainValues(pickle.Unpickler):
    """Unpickles plain values only: any global (class, function) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise BadCheckpointError(f"refused, its pickled 'config' references {module}.{name}, which is code, "
                                 "not a plain value")


def recorded_kwargs(package: Any) -> dict[str, Any]:
    """The constructor keywords a reference package records (``package["config"]``, unpickled as plain
    values only), less :data:`IGNORED_RECORDED`; ``{}`` for a plain ``state_dict``. A one-line
    :class:`BadCheckpointError` when they are not plain values or not a mapping."""
    if not isinstance(package, dict) or "config" not in package:
        return {}
    raw = package["config"]
    if not isinstance(raw, bytes | bytearray):
        raise BadCheckpointError(f"'config' is {type(raw).__name__}, not the reference's pickled keywords")
    try:
        config = _PlainValues(io.BytesIO(raw)).load()
    except BadCheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed pickle becomes one line
        raise BadCheckpointError(f"'config' is not a readable pickle of keywords ({type(err).__name__}: {err})"
                                 ) from None
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        raise BadCheckpointError(f"'config' holds {type(config).__name__}, not a mapping of keywords")
    return {key: value for key, value in config.items() if key not in IGNORED_RECORDED}
