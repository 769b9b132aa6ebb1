"""A model module that prints while it is imported (``tests/test_isolated.py``): nothing it
prints may reach a command's stdout, so ``count ... --format json`` still parses."""

from torch import nn

print("tests.fault_models_printimport: a line printed at import")


def small() -> nn.Module:
    """Linear 4 -> 2 with bias: 4 * 2 = 8 MACs per sample, 4 * 2 + 2 = 10 parameters."""
    return nn.Linear(4, 2)


small.example_input_shape = (1, 4)  # type: ignore[attr-defined]
