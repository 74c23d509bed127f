"""stemsep: music source separation with PyTorch Lightning."""

__version__ = "0.1.0.dev0"

DEFAULT_SOURCES = ["drums", "bass", "other", "vocals"]
