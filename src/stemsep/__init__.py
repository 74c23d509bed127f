"""stemsep: music source separation with PyTorch Lightning.

The package root holds the version and re-exports the bottom layer only (the network contract);
see docs/architecture.md for the packages and what each may import.
"""

from stemsep.contract import DEFAULT_SOURCES, SeparationNetwork, check_network

__version__ = "0.1.0.dev0"

__all__ = ["DEFAULT_SOURCES", "SeparationNetwork", "__version__", "check_network"]
