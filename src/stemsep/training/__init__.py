"""Lightning: the SeparationModule, the LightningCLI and the callbacks of a training run."""

from stemsep.training.module import SeparationModule

__all__ = ["SeparationModule"]
