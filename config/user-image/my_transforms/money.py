"""A helper module: transforms may import their siblings like any package."""

from decimal import Decimal


def units(cents: int) -> float:
    """Minor units (cents) as a number of major units, e.g. 1999 -> 19.99."""
    return float(Decimal(cents) / 100)
