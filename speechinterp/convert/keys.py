"""Check a foreign state dict against what a family expects, and say exactly what is wrong."""
from __future__ import annotations

from typing import Mapping

import numpy as np


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the encoder family."""


def check_state_dict(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                     source: str = "checkpoint", ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys.

    ``expected`` maps key -> shape; keys starting with any prefix in ``ignore`` are not reported
    as unexpected.
    """
    have = {k for k in state if not any(k.startswith(p) for p in ignore)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(have - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(np.shape(state[k]))} vs expected {tuple(expected[k])}"
        for k in set(expected) & set(state) if tuple(np.shape(state[k])) != tuple(expected[k]))
    if missing or unexpected or misshaped:
        parts = [f"{source} does not match the encoder:"]
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("mis-shaped", misshaped)):
            if items:
                parts.append(f"  {label} ({len(items)}): " + ", ".join(items[:50])
                             + (" ..." if len(items) > 50 else ""))
        raise CheckpointMismatchError("\n".join(parts))
