"""Readers of foreign checkpoint files and a registry of formats for ``experiments.convert``.

A family module registers a format with :func:`register_format`; ``detect(path) -> bool`` says
whether a source looks like that format, ``convert(path, **options) -> Encoder`` builds the Flax
encoder (params as numpy arrays, ``source_sha256`` set). The valid option names are the
function's keyword parameters, or ``options`` given to :func:`register_format` (a list, or a
function returning one) where the function takes ``**options``; :func:`convert` rejects any other
name with a :class:`ConvertOptionError` listing the valid ones.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import inspect
import pkgutil
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[str], bool]
    convert: Callable[..., object]
    description: str = ""
    options: Sequence[str] | Callable[[], Sequence[str]] | None = None


class ConvertOptionError(ValueError):
    """A converter option that the format does not have."""


class NotThisFormatError(ValueError):
    """A source that the named format cannot read (and that its detector does not recognise)."""


_FORMATS: dict[str, Format] = {}


def register_format(name: str, detect: Callable[[str], bool], description: str = "",
                    options: Sequence[str] | Callable[[], Sequence[str]] | None = None):
    """Decorator for a ``convert(path, **options) -> Encoder`` function; ``options`` names the
    options it takes through ``**options`` (default: its keyword parameters only)."""
    def deco(fn):
        _FORMATS[name] = Format(name, detect, fn, description, options)
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


def format_options(name: str) -> list[str]:
    """The option names format ``name`` accepts."""
    fmts = formats()
    if name not in fmts:
        raise KeyError(f"unknown format {name!r}; known: {sorted(fmts)}")
    fmt = fmts[name]
    params = list(inspect.signature(fmt.convert).parameters.values())[1:]   # after path
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    extra = fmt.options() if callable(fmt.options) else (fmt.options or ())
    return sorted(set(names) | set(extra))


def check_options(name: str, options) -> None:
    """Raise :class:`ConvertOptionError` naming any option format ``name`` does not take."""
    valid = format_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConvertOptionError(
            f"unknown option(s) {', '.join(unknown)} for format {name}; valid options: "
            f"{', '.join(valid) if valid else 'none'}")


def convert(path: str, format: str | None = None, **options):
    """Convert ``path`` to an :class:`~speechinterp.encoders.base.Encoder`."""
    fmts = formats()
    name = format or detect_format(path)
    if name not in fmts:
        raise KeyError(f"unknown format {name!r}; known: {sorted(fmts)}")
    check_options(name, options)
    try:
        return fmts[name].convert(path, **options)
    except Exception as e:
        ours = type(e).__module__.split(".")[0] == "speechinterp"
        if ours or _safe_detect(fmts[name], path):
            raise                     # our own error, or a bug on a file of this format
        others = [f.name for f in fmts.values() if f.name != name and _safe_detect(f, path)]
        raise NotThisFormatError(
            f"{path} is not a {name} checkpoint: reading it failed with {type(e).__name__}: "
            f"{e}" + (f"; it looks like {', '.join(others)}" if others else "")) from e
