"""Speech encoders in Flax, one module per family, found by name through a registry.

``load(path)`` reads a directory written by ``experiments.convert`` (or ``train_encoder``).
"""
from __future__ import annotations

import importlib
import os
import pkgutil

from speechinterp.encoders.base import Encoder, apply_layer_mask, mean_pool, register, registry


def _import_families() -> None:
    """Import every family module so its ``@register`` runs."""
    for mod in pkgutil.iter_modules([os.path.dirname(__file__)]):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"speechinterp.encoders.{mod.name}")


def get_family(name: str):
    _import_families()
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown encoder family {name!r}; known: {sorted(reg)}")
    return reg[name]


def architecture(family: str) -> str:
    """The architecture a family declares in its ``@register`` line: transformer, cnn, lstm
    or tdnn (analysis code asks here, never guesses from names)."""
    return get_family(family).architecture


def load(path: str) -> Encoder:
    """Load a converted encoder directory (``config.json`` + orbax ``params/``)."""
    from speechinterp import checkpoint

    meta = checkpoint.read_encoder_meta(path)
    cls = get_family(meta["family"])
    config = cls.config_from_dict(meta["config"])
    params = checkpoint.load_pytree(os.path.join(path, "params"))
    return cls(config=config, params=params, family=meta["family"],
               sample_rate=meta.get("sample_rate", 16000),
               normalize_waveform=meta.get("normalize_waveform", False),
               source_sha256=meta.get("source_sha256"))


__all__ = ["Encoder", "apply_layer_mask", "mean_pool", "register", "registry", "load",
           "get_family", "architecture"]
