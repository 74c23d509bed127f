"""Lightning callbacks of the training workflow: W&B media at validation, torch.compile."""

from stemsep.training.callbacks.compile import CompileNetwork
from stemsep.training.callbacks.wandb_media import WandbMedia

__all__ = ["CompileNetwork", "WandbMedia"]
