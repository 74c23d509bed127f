"""Deprecated alias of :mod:`stemsep.training.callbacks` (configs that name
``stemsep.callbacks.WandbMedia`` or ``stemsep.callbacks.CompileNetwork`` keep working)."""

from stemsep.training.callbacks import CompileNetwork, WandbMedia

__all__ = ["CompileNetwork", "WandbMedia"]
