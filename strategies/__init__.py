"""The Strategy base class, the registry and every continual-learning method."""

from .base import Strategy, tensor_bytes
from .registry import resolve_strategy, strategy_names
from .space import Choice, Float, Int

__all__ = ["Strategy", "tensor_bytes", "resolve_strategy", "strategy_names", "Choice", "Float", "Int"]
