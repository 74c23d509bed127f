"""TEMPORARY delegation (being converted to a typed library call)."""

from stemsep.inference.export import add_arguments, run  # noqa: F401

HELP = "Export a model to ONNX or TorchScript."
