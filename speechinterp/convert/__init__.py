"""Readers of foreign checkpoint files and a registry of formats for ``experiments.convert``.

A family module registers a format with :func:`register_format`; ``detect(path) -> bool`` says
whether a source looks like that format, ``convert(path, **options) -> Encoder`` builds the Flax
encoder (params as numpy arrays, ``source_sha256`` set).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[str], bool]
    convert: Callable[..., object]
    description: str = ""


_FORMATS: dict[str, Format] = {}


def register_format(name: str, detect: Callable[[str], bool], description: str = ""):
    """Decorator for a ``convert(path, **options) -> Encoder`` function."""
    def deco(fn):
        _FORMATS[name] = Format(name, detect, fn, description)
        return fn
    return deco


def _import_all() -> None:
    import speechinterp.encoders as enc
    enc._import_families()
    for mod in pkgutil.iter_modules([os.path.dirname(__file__)]):
        importlib.import_module(f"speechinterp.convert.{mod.name}")


def formats() -> dict[str, Format]:
    _import_all()
    return dict(_FORMATS)


def _safe_detect(fmt: Format, path: str) -> bool:
    try:
        return bool(fmt.detect(path))
    except Exception:  # a detector that cannot parse the file does not recognise it
        return False


def detect_format(path: str) -> str:
    """The name of the one registered format that recognises ``path``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint source not found: {path}")
    hits = [f.name for f in formats().values() if _safe_detect(f, path)]
    if not hits:
        raise ValueError(f"{path}: no known checkpoint format recognises it; pass --format "
                         f"(known: {sorted(_FORMATS)})")
    if len(hits) > 1:
        raise ValueError(f"{path}: ambiguous checkpoint format {hits}; pass --format")
    return hits[0]


def convert(path: str, format: str | None = None, **options):
    """Convert ``path`` to an :class:`~speechinterp.encoders.base.Encoder`."""
    fmts = formats()
    name = format or detect_format(path)
    if name not in fmts:
        raise KeyError(f"unknown format {name!r}; known: {sorted(fmts)}")
    return fmts[name].convert(path, **options)
