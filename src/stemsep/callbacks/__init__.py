"""Lightning callbacks of the training workflow: W&B media at validation, torch.compile."""

from stemsep.callbacks.compile import CompileNetwork
from stemsep.callbacks.wandb_media import WandbMedia

__all__ = ["CompileNetwork", "WandbMedia"]
