"""``stemsep import-checkpoint`` as a library function: an MSST-style checkpoint + its YAML -> a stemsep checkpoint.

The community's RoFormer (and other) checkpoints are trained with Music-Source-Separation-Training
("MSST"). A release is two files:

* the weights, ``torch.save(model.state_dict(), "model.ckpt")`` (``.ckpt``/``.pth``), sometimes
  wrapped as ``{"state_dict": ...}``, ``{"model_state_dict": ...}`` (MSST's full training
  checkpoints) or ``{"state": ...}``, with ``module.`` prefixes when saved from DataParallel;
* the YAML config beside it: ``audio:`` (``sample_rate``, ``num_channels``, ``chunk_size``, ...),
  ``model:`` (the network's constructor keyword arguments) and ``training:`` (``instruments``,
  ``target_instrument``: when set, the network returns that one stem).

The weights are read with torch's weights-only unpickler (never pickled code); the YAML with a
safe loader that accepts MSST's ``!!python/tuple`` tags (as lists) and refuses every other Python
tag. The architecture comes from ``--model-type`` (MSST's names, :data:`MODEL_TYPES`); our class
is named by class path and resolved at run time, like every checkpoint's (this layer does not
depend on the models package). Every ``model:`` key must be a constructor argument of our class;
the weights load strictly; the result is written with :func:`stemsep.io.checkpoint.save_checkpoint`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from stemsep.contract import network_config
from stemsep.errors import BadCheckpointError, StemsepError
from stemsep.io.checkpoint import import_class, open_checkpoint, refused_globals, save_checkpoint
from stemsep.io.files import file_sha256
from stemsep.io.import_hstasnet import HSTASNET_WRAPPER_KEYS, hstasnet_config_sections, recorded_kwargs
from stemsep.io.import_scnet import SCNET_WRAPPER_KEYS, reference_config_sections
from stemsep.io.remote import name_of
from stemsep.io.weights import load_weights


@dataclass(frozen=True)
class MsstConfig:
    """The parts of an MSST YAML config the importer reads."""

    path: Path
    audio: dict[str, Any]
    model: dict[str, Any]
    training: dict[str, Any]

    @property
    def sources(self) -> list[str]:
        """``[training.target_instrument]`` when set, else ``training.instruments``."""
        target = self.training.get("target_instrument")
        if target:
            return [str(target)]
        instruments = self.training.get("instruments")
        if not isinstance(instruments, list) or not instruments or not all(isinstance(i, str) for i in instruments):
            raise BadCheckpointError(f"{self.path}: training.instruments must be a non-empty list of stem names "
                                     f"(got {instruments!r})")
        return list(instruments)


@dataclass(frozen=True)
class ModelType:
    """How to import one MSST ``model_type``.

    Args:
        class_path: our network of that architecture (e.g. ``stemsep.models.BSRoFormer``); its
            constructor takes the ``model:`` keys as they are and its ``state_dict`` has MSST's names.
        wrapper_keys: optional keys of a checkpoint dict holding the state_dict, tried in order
            (default :data:`WRAPPER_KEYS`).
        adapt_config: optional ``YAML mapping -> YAML mapping`` run before the sections are read,
            for configs in another layout than MSST's (used when ``--model-type`` is given).
        state_kwargs: optional ``state_dict -> kwargs`` the weights imply, used where the
            config's ``model:`` does not set them (e.g. a plain bs-roformer 0.5.1 state_dict has
            value-residual weights that MSST's copy lacks).
        recorded_kwargs: optional ``loaded file -> kwargs`` the checkpoint itself records (read as
            plain data, never code); the network built from the config must have the same values
            (e.g. HS-TasNet's ``overlap_len``, which no weight's shape shows).
    """

    class_path: str
    wrapper_keys: tuple[str, ...] | None = None
    adapt_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    state_kwargs: Callable[[dict[str, torch.Tensor]], dict[str, Any]] | None = None
    recorded_kwargs: Callable[[Any], dict[str, Any]] | None = None


def _value_residual(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """bs-roformer 0.5.1's learned value-residual mix (absent from MSST's copy and its checkpoints)."""
    return {"value_residual": True} if any(".to_value_residual_mix." in key for key in state) else {}


# MSST's --model_type name -> how to import it. Other architectures add an entry here.
MODEL_TYPES: dict[str, ModelType] = {
    "bs_roformer": ModelType("stemsep.models.BSRoFormer", state_kwargs=_value_residual),
    "mel_band_roformer": ModelType("stemsep.models.MelBandRoFormer"),
    # MSST's plain state_dicts, and the reference's .th packages with its conf/config.yaml (import_scnet)
    "scnet": ModelType("stemsep.models.SCNet", wrapper_keys=SCNET_WRAPPER_KEYS,
                       adapt_config=reference_config_sections),
    # the reference's HSTasNet.save packages (its keywords checked, import_hstasnet) and plain state_dicts
    "hstasnet": ModelType("stemsep.models.HSTasNet", wrapper_keys=HSTASNET_WRAPPER_KEYS,
                          adapt_config=hstasnet_config_sections, recorded_kwargs=recorded_kwargs),
}

# Constructor arguments of the stemsep contract, filled from the config when the class takes them.
CONTRACT_KWARGS = ("sources", "samplerate", "segment", "audio_channels")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "state")


# ------------------------------------------------------------------------------------------ YAML
class _MsstYamlLoader(yaml.SafeLoader):
    """YAML's safe loader plus MSST's ``!!python/tuple`` (as a list); other Python tags stay refused."""


_MsstYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                lambda loader, node: loader.construct_sequence(node, deep=True))


def read_msst_config(path: str | Path,
                     adapt_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> MsstConfig:
    """Parse an MSST YAML config without constructing Python objects; one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadCheckpointError(f"{path}: config not found")
    try:
        data = yaml.load(path.read_text(), Loader=_MsstYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as err:
        raise BadCheckpointError(f"{path}: refused, the YAML asks to build a Python object "
                                 f"({err.problem}{_where(err)})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadCheckpointError(f"{path}: not a readable YAML config ({first})") from None
    if not isinstance(data, dict):
        raise BadCheckpointError(f"{path}: not an MSST config (top level is {type(data).__name__}, not a mapping)")
    if adapt_config is not None:
        try:
            data = adapt_config(data)
        except BadCheckpointError as err:
            raise BadCheckpointError(f"{path}: {err}") from None
    sections = {}
    for name in ("audio", "model", "training"):
        section = data.get(name)
        if not isinstance(section, dict):
            raise BadCheckpointError(f"{path}: no '{name}:' section (an MSST config has audio, model and training)")
        sections[name] = section
    return MsstConfig(path=path, **sections)


def _where(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark
    return f", line {mark.line + 1}" if mark is not None else ""


# ------------------------------------------------------------------------------------- weights
def read_msst_state_dict(path: str | Path, wrapper_keys: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The state_dict of an MSST checkpoint (a path or a URL), read without running pickled code."""
    with open_checkpoint(path, by_name=False) as file:
        return _read_msst_state_dict(name_of(path), file, wrapper_keys)


def _read_msst_state_dict(path: str | Path, file: Path,
                          wrapper_keys: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    return _state_dict_of(path, _load_weights_only(path, file), wrapper_keys)


def _load_weights_only(path: str | Path, file: Path) -> Any:
    """The object in the torch file ``file`` (named ``path`` in errors), loaded weights-only."""
    if not file.is_file():
        raise BadCheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        text = str(err)
        unsafe = refused_globals(file, text)
        if unsafe:
            raise BadCheckpointError(f"{path}: refused, the pickle references {unsafe}, which is not a tensor "
                                     "or a plain value (possibly malicious)") from None
        operand = re.search(r"Unsupported operand (\d+)", text)
        if operand:  # junk, or a pickle using opcodes a weights-only file never has
            raise BadCheckpointError(f"{path}: not a weights-only torch file (unsupported pickle operand "
                                     f"{operand.group(1)}): corrupt, or pickled objects; refused") from None
        if "Weights only load failed" in text:
            raise BadCheckpointError(f"{path}: refused, it holds pickled code or objects, not only weights") from None
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise BadCheckpointError(f"{path}: not a readable torch file, truncated or corrupt ({first})") from None
    return obj


def _state_dict_of(path: str | Path, obj: Any, wrapper_keys: tuple[str, ...] | None) -> dict[str, torch.Tensor]:
    """The state_dict in a loaded checkpoint: unwrapped by the first of ``wrapper_keys`` present."""
    for key in wrapper_keys or WRAPPER_KEYS:  # MSST's own loader unwraps the same keys
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {sorted(obj)[:5]}"
        raise BadCheckpointError(f"{path}: not a state_dict of tensors (found {kind})")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# ------------------------------------------------------------------------------------- network
def check_recorded(recorded: dict[str, Any], built: dict[str, Any], origin: str, config: Path) -> None:
    """One-line error unless the keywords a checkpoint records equal those the config builds with
    (``built``: the constructor's arguments, defaults included; one left None is derived by the class
    and checked on the network, its attribute of that name)."""
    for key, value in recorded.items():
        if key not in built:
            raise BadCheckpointError(f"{origin}: records {key}={value!r}, not an option of the network")
        if built[key] is not None and built[key] != value:
            raise BadCheckpointError(f"{origin}: saved with {key}={value!r} but {config} builds {key}={built[key]!r}; "
                                     f"set model.{key}: {value!r} there")


def build_network(config: MsstConfig, model_type: str, recorded: dict[str, Any] | None = None,
                  origin: str = "checkpoint") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Our network for ``config`` (random weights) and its ``{"class_path", "init_args"}``;
    ``recorded``: the keywords the checkpoint ``origin`` records (:func:`check_recorded`)."""
    if model_type not in MODEL_TYPES:
        raise StemsepError(f"--model-type {model_type!r} is not supported (one of {', '.join(sorted(MODEL_TYPES))})")
    spec = MODEL_TYPES[model_type]
    cls = import_class(spec.class_path, origin=str(config.path))
    kwargs = dict(config.model)
    parameters = inspect.signature(cls).parameters
    for key in kwargs:
        if key not in parameters:
            raise BadCheckpointError(f"{config.path}: model.{key}: unknown option for {spec.class_path} "
                                     f"(model_type {model_type})")
    sources = config.sources
    contract = {"sources": sources}
    rate, chunk, channels = (config.audio.get(k) for k in ("sample_rate", "chunk_size", "num_channels"))
    if rate is not None:
        contract["samplerate"] = int(rate)
        if chunk is not None:
            contract["segment"] = float(chunk) / float(rate)
    if channels is not None:
        contract["audio_channels"] = int(channels)
    for key in CONTRACT_KWARGS:
        if key in parameters and key in contract and key not in kwargs:
            kwargs[key] = contract[key]
    if "num_stems" in parameters:
        stems = kwargs.get("num_stems", parameters["num_stems"].default)
        if stems is not None and stems != len(sources):
            raise BadCheckpointError(f"{config.path}: model.num_stems {stems} but the config names "
                                     f"{len(sources)} source(s) {sources} (training.target_instrument/instruments)")
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    check_recorded(recorded or {}, {**defaults, **kwargs}, origin, config.path)
    try:
        net = cls(**kwargs)
    except StemsepError as err:  # the class's own one-line error (e.g. a refused option): name the file
        raise BadCheckpointError(f"{config.path}: {err}") from None
    except (TypeError, ValueError, AssertionError) as err:
        raise BadCheckpointError(f"{config.path}: cannot build {spec.class_path} from model: ({err})") from None
    if list(net.sources) != sources:
        raise BadCheckpointError(f"{config.path}: {spec.class_path} returns {list(net.sources)}, "
                                 f"the config names {sources}")
    if channels is not None and int(net.audio_channels) != int(channels):
        raise BadCheckpointError(f"{config.path}: audio.num_channels {channels} but the model takes "
                                 f"{net.audio_channels} channel(s) (model.stereo)")
    init_args = network_config(net)["init_args"] or kwargs
    check_recorded(recorded or {}, {**init_args, **{k: getattr(net, k, None) for k in recorded or {}
                                                     if init_args.get(k) is None}}, origin, config.path)
    return net, {"class_path": spec.class_path, "init_args": init_args}


def _recorded(checkpoint: str | Path, spec: ModelType | None, loaded: Any) -> dict[str, Any]:
    """The keywords the checkpoint records (``spec.recorded_kwargs``), errors naming the file."""
    if spec is None or spec.recorded_kwargs is None:
        return {}
    try:
        return spec.recorded_kwargs(loaded)
    except BadCheckpointError as err:
        raise BadCheckpointError(f"{checkpoint}: {err}") from None


def import_checkpoint(checkpoint: str | Path, config: str | Path, dst: str | Path, *, model_type: str | None = None,
                      force: bool = False) -> dict[str, Any]:
    """``stemsep import-checkpoint``: convert an MSST checkpoint and its YAML config into the stemsep checkpoint ``dst``.

    ``model_type``: MSST's name of the architecture (:data:`MODEL_TYPES`); default the config's
    ``training.model_type``. ``force``: overwrite ``dst``. Returns a summary (class path,
    parameters, sources, sha256 of the source checkpoint).
    """
    checkpoint, dst = name_of(checkpoint), Path(dst)  # a URL stays a string
    if dst.exists() and not force:
        raise StemsepError(f"{dst}: already exists (use --force to overwrite)")
    given = MODEL_TYPES.get(model_type) if model_type is not None else None
    msst = read_msst_config(config, given.adapt_config if given is not None else None)
    stated = msst.training.get("model_type")
    if model_type is None:
        if not stated:
            raise StemsepError(f"{msst.path}: no training.model_type; give --model-type "
                               f"({', '.join(sorted(MODEL_TYPES))})")
        model_type = str(stated)
    elif stated and stated != model_type:
        raise StemsepError(f"{msst.path}: training.model_type is {stated!r}, not the --model-type {model_type!r}")
    spec = MODEL_TYPES.get(model_type)
    with open_checkpoint(checkpoint, by_name=False) as file:
        loaded = _load_weights_only(checkpoint, file)
        state = _state_dict_of(checkpoint, loaded, spec.wrapper_keys if spec is not None else None)
        sha256 = file_sha256(file)
    recorded = _recorded(checkpoint, spec, loaded)
    implied = MODEL_TYPES[model_type].state_kwargs if model_type in MODEL_TYPES else None
    if implied is not None:
        for key, value in implied(state).items():
            msst.model.setdefault(key, value)
    net, net_config = build_network(msst, model_type, recorded, origin=str(checkpoint))
    load_weights(net, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                 origin=str(checkpoint))
    provenance = {"file": file.name, "config": msst.path.name, "model_type": model_type, "sha256": sha256}
    save_checkpoint(dst, net.eval(), net_config, {"imported_from": provenance})
    return {**provenance, "class_path": net_config["class_path"],
            "parameters": sum(p.numel() for p in net.parameters()), "sources": list(net.sources)}
