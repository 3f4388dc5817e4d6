"""Save and load converted encoders (orbax-checkpoint params + ``config.json``).

Layout of an encoder directory::

    DIR/config.json   {"family", "config", "sample_rate", "normalize_waveform",
                       "source_sha256", "layer_names", ...extra}
    DIR/params/       orbax PyTree checkpoint of the Flax parameter tree
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def sha256_of(path: str) -> str:
    """sha256 of a file, or of every file of a directory in sorted order."""
    h = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs)
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _config_dict(config: Any) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


def save_pytree(path: str, tree: Any) -> None:
    """Write a pytree of arrays with orbax, replacing ``path`` atomically."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=parent)
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(os.path.join(tmp, "tree"), jax.tree.map(np.asarray, tree))
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(os.path.join(tmp, "tree"), path)
    shutil.rmtree(tmp, ignore_errors=True)


def load_pytree(path: str) -> Any:
    """Read a pytree written by :func:`save_pytree` as numpy arrays."""
    tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
    return jax.tree.map(np.asarray, tree)


def save_encoder(path: str, encoder, **extra) -> None:
    """Write ``encoder`` (a :class:`speechinterp.encoders.base.Encoder`) to ``path``."""
    os.makedirs(path, exist_ok=True)
    save_pytree(os.path.join(path, "params"), encoder.params)
    meta = {
        "family": encoder.family,
        "config": _config_dict(encoder.config),
        "sample_rate": encoder.sample_rate,
        "normalize_waveform": encoder.normalize_waveform,
        "source_sha256": encoder.source_sha256,
        "layer_names": list(encoder.layer_names),
        **extra,
    }
    tmp = os.path.join(path, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(path, "config.json"))


def read_encoder_meta(path: str) -> dict:
    cfg = os.path.join(path, "config.json")
    if not os.path.exists(cfg):
        raise FileNotFoundError(f"{path}: not an encoder directory (no config.json)")
    with open(cfg) as f:
        return json.load(f)
