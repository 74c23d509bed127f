"""stemsep: music source separation with PyTorch Lightning.

The package root holds the version and re-exports the bottom layer only (the network contract);
see docs/architecture.md for the packages and what each may import. ``stemsep.Separator`` (the
Python API of ``stemsep separate``) is the one exception: it is looked up lazily, on first access,
so importing ``stemsep`` still loads nothing above the bottom layer.
"""

from stemsep.contract import DEFAULT_SOURCES, SeparationNetwork, check_network

__version__ = "0.1.0.dev0"

__all__ = ["DEFAULT_SOURCES", "SeparationNetwork", "Separator", "__version__", "check_network"]


def __getattr__(name: str):
    """``stemsep.Separator``: :class:`stemsep.inference.Separator`, imported on first access only."""
    if name == "Separator":
        from stemsep.inference.separator import Separator

        return Separator
    raise AttributeError(f"module 'stemsep' has no attribute {name!r}")
