"""The one way numbers are written in tables, reports and findings."""
from __future__ import annotations


def number_text(x, signed: bool = False) -> str:
    """A number rounded to 3 digits (``+`` sign with ``signed``), or ``n/a`` for None."""
    if x is None:
        return "n/a"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def interval_text(ci) -> str:
    """`` [0.771, 0.850]``, or ``""`` when the interval is missing."""
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def accuracy_text(x, ci=None, sd=None, no_interval: str = "") -> str:
    """``0.812 [0.771, 0.850] ± 0.010`` (the seed sd when given); ``n/a`` for None;
    ``no_interval`` in place of a missing interval (findings write `` [no interval]``)."""
    if x is None:
        return "n/a"
    return number_text(x) + (interval_text(ci) or no_interval) + (
        f" ± {sd:.3f}" if sd is not None else "")
