"""What ``stemsep import-checkpoint --model-type scnet`` needs beyond the MSST defaults.

SCNet checkpoints come two ways:

* from MSST (``--model_type scnet``): a plain ``state_dict`` and an MSST YAML (``audio:``,
  ``model:`` with the reference's constructor keywords, ``training:``): the defaults apply;
* from the reference implementation (github.com/starrytong/SCNet): a ``.th`` package written by
  its solver, ``{"state", "best_state", "optimizer", "epoch", "best_nsdr", "ema_batch_0", ...}``
  (possibly only ``{"best_state": ...}``), with the reference's ``conf/config.yaml`` (``data:``
  with ``samplerate``, ``channels``, ``segment``, ``sources``; ``model:``; no ``audio:`` or
  ``training:``). The reference's own loader takes ``best_state`` (the weights of the best
  validation epoch), so :data:`SCNET_WRAPPER_KEYS` prefers it over ``state`` (the last epoch's).

:func:`reference_config_sections` turns the reference's YAML into MSST's sections. Packages are
read as every checkpoint is: ``torch.load(weights_only=True)``, pickled code refused.
"""

from __future__ import annotations

from typing import Any

from stemsep.errors import BadCheckpointError

# Unwrapped in this order (the first present wins); a plain state_dict has none of these keys.
SCNET_WRAPPER_KEYS = ("best_state", "state", "state_dict", "model_state_dict")


def reference_config_sections(data: dict[str, Any]) -> dict[str, Any]:
    """The reference's ``conf/config.yaml`` as MSST sections (``audio``, ``model``, ``training``);
    an MSST config (it has ``audio:``) is returned as it is."""
    if "audio" in data or "model" not in data:
        return data
    solver = data.get("data")
    if not isinstance(solver, dict):
        raise BadCheckpointError("neither an MSST config (audio:, model:, training:) nor the SCNet reference's "
                                 "(data:, model:)")
    model = data["model"]
    if not isinstance(model, dict):
        raise BadCheckpointError("model: must be a mapping of SCNet constructor arguments")
    samplerate = int(solver.get("samplerate", 44100))
    audio = {"sample_rate": samplerate, "num_channels": int(solver.get("channels", model.get("audio_channels", 2)))}
    if solver.get("segment") is not None:
        audio["chunk_size"] = int(round(float(solver["segment"]) * samplerate))
    sources = model.get("sources") or solver.get("sources")
    return {**data, "audio": audio, "training": {"instruments": list(sources) if sources else sources}}
