"""The distillation methods' registry, apart from the methods: the recipe's `distill:` block
validates method names against it, and the methods (methods.py, features.py, strategies.py)
register into it."""

from edgekd.registry import Registry

methods: Registry = Registry("distillation method")
