"""Read a flat ``{name: numpy array}`` state dict from Hugging Face directories and files.

Supports ``model.safetensors``, ``pytorch_model.bin`` and their sharded forms
(``*.index.json`` with a ``weight_map``), without torch.
"""
from __future__ import annotations

import json
import os

import numpy as np

from speechinterp.convert import torch_pickle


def read_file(path: str) -> dict[str, np.ndarray]:
    """One ``.safetensors`` or torch-pickled file -> flat dict of float/int numpy arrays."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        return dict(load_file(path))
    obj = torch_pickle.load(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def hf_weight_files(directory: str) -> list[str]:
    """The weight files of a Hugging Face model directory (sharded or not)."""
    for base in _WEIGHT_FILES:
        single = os.path.join(directory, base)
        if os.path.exists(single):
            return [single]
        index = single + ".index.json"
        if os.path.exists(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(directory, s) for s in shards]
    raise FileNotFoundError(
        f"{directory}: no model.safetensors, pytorch_model.bin or sharded index found")


def read_hf_directory(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as dict, merged state dict) of a Hugging Face model directory."""
    cfg_path = os.path.join(directory, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{directory}: no config.json")
    with open(cfg_path) as f:
        config = json.load(f)
    state: dict[str, np.ndarray] = {}
    for path in hf_weight_files(directory):
        state.update(read_file(path))
    return config, state


def is_hf_directory(path: str, model_types: tuple[str, ...]) -> bool:
    """True when ``path`` is a HF directory whose config.json ``model_type`` is in the list."""
    cfg = os.path.join(path, "config.json")
    if not (os.path.isdir(path) and os.path.exists(cfg)):
        return False
    try:
        with open(cfg) as f:
            return json.load(f).get("model_type") in model_types
    except (OSError, ValueError):
        return False
