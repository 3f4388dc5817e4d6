"""Convert Shon et al.'s TensorFlow dialect-ID CNN checkpoints to the Flax ``cnn`` family.

Variable naming of the original code (github.com/swshon/dialectID_e2e ``models/e2e_model.py``,
confirmed on the released ``model1284000.ckpt-1284000.index``)::

    conv{i}W [k, in, out], conv{i}b [out]         i = 1..4   (tf.nn.conv1d, 'SAME')
    fc{j}W [in, out], fc{j}b [out]                 j = 1, 2; fc3 = the softmax layer's logits
    bn{n}scale, bn{n}beta, bn{n}pop_mean, bn{n}pop_var   n = 1..6 (only when trained with BN)
    Variable (global step), acc (a summary variable): ignored

TF2 object-based names (``.../conv1W/.ATTRIBUTES/VARIABLE_VALUE``) and variable scopes are
accepted: the scope ``prefix`` (option; found by itself when one scope holds ``conv1W``) is
removed, then a trailing ``/.ATTRIBUTES/VARIABLE_VALUE``.
``mapping`` (option: dict or ``"tfname=flaxname,..."``) renames further TF names to the canonical
names above. The architecture is read off the shapes (filters, kernels, FC sizes, classes,
statistics pooling when fc1's input is twice conv4's width); strides (default 1,2,1,1) and the
front end are options. The released MGB-3 model (``model1284000.ckpt-1284000``: conv 500-500-500-
3000, FC 1500-600, 5 dialects, no batch norm; its index lists exactly the names above plus
``Variable``) was trained on ``logmel_fft400_hop160_vad_cmvn`` features; to reproduce them::

    python -m experiments.convert --source=DIR --out=OUT --option pad_mode=reflect \
        --option vad=true --option normalize=sliding_meanvar \
        --option classes=EGY,GLF,LAV,MSA,NOR
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

from speechinterp.convert import register_format
from speechinterp.convert.keys import CheckpointMismatchError, check_state_dict
from speechinterp.convert.tf_checkpoint import TFCheckpoint, is_tf_checkpoint

IGNORED = ("Variable", "acc", "global_step", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH",
           "beta1_power", "beta2_power")
_BN_SUFFIX = {"scale": "scale", "beta": "bias", "pop_mean": "mean", "pop_var": "var"}


def _parse_mapping(mapping) -> dict:
    if not mapping:
        return {}
    if isinstance(mapping, dict):
        return dict(mapping)
    return dict(item.split("=", 1) for item in str(mapping).split(",") if item)


def canonical_names(names, prefix: str = "", mapping=None) -> dict[str, str]:
    """Map checkpoint names to canonical TF names (``conv1W`` ...); optimizer slots dropped."""
    mapping = _parse_mapping(mapping)
    out = {}
    for n in names:
        if "OPTIMIZER_SLOT" in n or n.endswith(("/Adam", "/Adam_1", "/Momentum")):
            continue
        c = n[len(prefix):] if prefix and n.startswith(prefix) else n
        c = c.lstrip("/")
        c = re.sub(r"/\.ATTRIBUTES/VARIABLE_VALUE$", "", c)
        c = mapping.get(c, c)
        out[n] = c
    return out


def tf_state(path: str, prefix: str = "", mapping=None, verify: bool = True) -> dict:
    """Canonically named numpy tensors of a TF checkpoint (string tensors skipped)."""
    ck = TFCheckpoint(path)
    keys = [k for k in ck.names() if ck.entry(k).dtype != 7]
    names = canonical_names(keys, prefix, mapping)
    if not prefix and "conv1W" not in names.values():  # one enclosing scope: found by itself
        scopes = {c[:-len("conv1W")] for c in names.values() if c.endswith("/conv1W")}
        if len(scopes) == 1:
            names = canonical_names(keys, scopes.pop(), mapping)
    return {c: ck.read(n, verify) for n, c in names.items()}


def infer_config(state: dict, **options):
    """A :class:`CNNConfig` consistent with the tensor shapes in ``state``."""
    from speechinterp.encoders.cnn import CNNConfig

    n_conv = len([k for k in state if re.fullmatch(r"conv\d+W", k)])
    n_fc = len([k for k in state if re.fullmatch(r"fc\d+W", k)]) - 1
    if n_conv < 1 or n_fc < 0 or "conv1W" not in state or f"fc{n_fc + 1}W" not in state:
        raise CheckpointMismatchError(
            "not a dialect-ID CNN checkpoint: expected conv1W..convNW and fc1W..fcMW, found "
            + ", ".join(sorted(state)[:30]))
    filters = tuple(int(state[f"conv{i}W"].shape[2]) for i in range(1, n_conv + 1)
                    if f"conv{i}W" in state)
    kernels = tuple(int(state[f"conv{i}W"].shape[0]) for i in range(1, n_conv + 1)
                    if f"conv{i}W" in state)
    fc_dims = tuple(int(state[f"fc{j}W"].shape[1]) for j in range(1, n_fc + 1))
    n_classes = int(state[f"fc{n_fc + 1}W"].shape[1])
    fc_in = int(state["fc1W"].shape[0]) if n_fc else filters[-1]
    strides = options.pop("strides", None)
    strides = (tuple(int(s) for s in str(strides).split(",")) if isinstance(strides, str)
               else tuple(strides) if strides else (1, 2, 1, 1)[:len(filters)])
    pooling = options.pop("pooling", "stats" if fc_in == 2 * filters[-1] else "mean")
    kw = dict(filters=filters, kernels=kernels, strides=strides, fc_dims=fc_dims,
              n_classes=n_classes, pooling=pooling, n_features=int(state["conv1W"].shape[1]),
              batch_norm="bn1scale" in state)
    for k, v in options.items():  # front-end options arrive as strings from the CLI
        default = getattr(CNNConfig, k, None)
        if isinstance(v, str) and isinstance(default, bool):
            v = v.lower() in ("1", "true", "yes")
        elif isinstance(v, str) and isinstance(default, (int, float)) and not isinstance(
                default, bool):
            v = type(default)(v)
        elif k == "classes" and isinstance(v, str):
            v = tuple(v.split(","))
        kw[k] = v
    return CNNConfig(**kw)


def expected_tf_shapes(cfg) -> dict:
    """Canonical TF name -> shape for a config (the inverse of the mapping below)."""
    shapes, cin = {}, cfg.n_features
    nbn = 0
    for i, (f, k) in enumerate(zip(cfg.filters, cfg.kernels), 1):
        shapes[f"conv{i}W"], shapes[f"conv{i}b"] = (k, cin, f), (f,)
        cin = f
    dims = (2 * cin if cfg.pooling == "stats" else cin,) + tuple(cfg.fc_dims)
    for j in range(len(cfg.fc_dims)):
        shapes[f"fc{j + 1}W"], shapes[f"fc{j + 1}b"] = (dims[j], dims[j + 1]), (dims[j + 1],)
    j = len(cfg.fc_dims) + 1
    shapes[f"fc{j}W"], shapes[f"fc{j}b"] = (dims[-1], cfg.n_classes), (cfg.n_classes,)
    if cfg.batch_norm:
        widths = list(cfg.filters) + list(cfg.fc_dims)
        for n, w in enumerate(widths, 1):
            for s in _BN_SUFFIX:
                shapes[f"bn{n}{s}"] = (w,)
    return shapes


def to_flax(state: dict, cfg) -> dict:
    """Canonical TF tensors -> the Flax parameter tree of :class:`DialectCNN`."""
    p = {}
    for i in range(1, len(cfg.filters) + 1):
        p[f"cnn{i}"] = {"kernel": state[f"conv{i}W"], "bias": state[f"conv{i}b"]}
    for j in range(1, len(cfg.fc_dims) + 1):
        p[f"fc{j}"] = {"kernel": state[f"fc{j}W"], "bias": state[f"fc{j}b"]}
    j = len(cfg.fc_dims) + 1
    p["classifier"] = {"kernel": state[f"fc{j}W"], "bias": state[f"fc{j}b"]}
    if cfg.batch_norm:
        for n in range(1, len(cfg.filters) + len(cfg.fc_dims) + 1):
            p[f"bn{n}"] = {v: state[f"bn{n}{k}"] for k, v in _BN_SUFFIX.items()}
    return {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in p.items()}


def detect(path: str) -> bool:
    if not is_tf_checkpoint(path):
        return False
    names = canonical_names(TFCheckpoint(path).names())
    return any(re.search(r"(^|/)conv1W$", c) for c in names.values())


def _cnn_option_names() -> list[str]:
    """``strides``, ``pooling`` and the CNNConfig fields (the rest is read from the weights)."""
    import dataclasses

    from speechinterp.encoders.cnn import CNNConfig
    return ["pooling", "strides"] + [f.name for f in dataclasses.fields(CNNConfig)]


@register_format("tf_dialect_cnn", detect,
                 "Shon et al. dialect/speaker-ID CNN, TensorFlow checkpoint V2 (conv1W ... fc3W)",
                 options=lambda: _cnn_option_names())
def convert(path: str, prefix: str = "", mapping=None, verify=True, **options):
    """TF checkpoint V2 -> :class:`~speechinterp.encoders.cnn.CNNEncoder`.

    Options: ``prefix`` (variable scope to strip), ``mapping`` (extra renames), ``verify``
    (crc32c check), ``strides``, ``pooling`` and any front-end field of ``CNNConfig``.
    """
    from speechinterp.checkpoint import sha256_of
    from speechinterp.encoders.cnn import CNNEncoder

    if isinstance(verify, str):
        verify = verify.lower() in ("1", "true", "yes")
    state = tf_state(path, prefix, mapping, verify)
    cfg = infer_config(state, **options)
    check_state_dict(state, expected_tf_shapes(cfg), source=path, ignore=IGNORED)
    enc = CNNEncoder(config=cfg, params=to_flax(state, cfg), family="cnn",
                     sample_rate=cfg.sample_rate)
    ck = TFCheckpoint(path)
    files = [ck.prefix + ".index"] + [ck.shard_path(i) for i in range(ck.header["num_shards"])]
    enc.source_sha256 = hashlib.sha256("".join(sha256_of(f) for f in files).encode()).hexdigest()
    return enc
