"""Convert fairseq wav2vec 2.0 / XLS-R / HuBERT checkpoints (``.pt``, read without torch).

A fairseq checkpoint is a torch pickle of a dict with the model's state dict under ``"model"``
and its configuration under ``"cfg"`` (hydra era: a plain dict, or a pickled omegaconf
``DictConfig``, with ``cfg["model"]`` and ``cfg["task"]``) or ``"args"`` (older: an
``argparse.Namespace``). Both are read into plain dicts (:func:`plain`).

Architecture (``fairseq/models/wav2vec/wav2vec2.py`` ``Wav2Vec2Config``, ``hubert/hubert.py``):
``conv_feature_layers`` (a Python expression such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 4 +
[(512,2,2)] * 2"``, evaluated by a tiny literal-only evaluator), ``extractor_mode`` ("default" =
group norm, "layer_norm"), ``conv_bias``, ``encoder_layers``, ``encoder_embed_dim``,
``encoder_ffn_embed_dim``, ``encoder_attention_heads``, ``activation_fn``, ``layer_norm_first``
(the stable-LN variant), ``conv_pos``, ``conv_pos_groups``, ``pos_conv_depth`` (> 1: data2vec-style
stack of convs with ``kernel max(3, conv_pos // depth)``), ``conv_pos_batch_norm``; the waveform
normalisation is ``cfg["task"]["normalize"]``. Fine-tuned checkpoints (``wav2vec_ctc``,
``hubert_ctc``: keys under ``w2v_encoder.w2v_model.``, pretraining config in ``w2v_args``) are
read through their pretrained encoder; the CTC projection is ignored.

Key mapping to the Hugging Face names (then :mod:`huggingface_wav2vec2` builds the parameters):
``feature_extractor.conv_layers.i.0`` -> ``...conv_layers.i.conv``; the norms ``.i.2`` (group) /
``.i.2.1`` (layer) -> ``.i.layer_norm``; ``post_extract_proj`` -> ``feature_projection.projection``
(identity when absent: feature width == model width); ``layer_norm`` ->
``feature_projection.layer_norm``; ``encoder.pos_conv.0.weight_g/weight_v/bias`` ->
``encoder.pos_conv_embed.conv.weight_g/weight_v/bias``; ``encoder.layers.i.self_attn.*_proj`` ->
``encoder.layers.i.attention.*_proj``; ``self_attn_layer_norm`` -> ``layer_norm``; ``fc1`` / ``fc2``
-> ``feed_forward.intermediate_dense`` / ``output_dense``. Pretraining-only keys (``mask_emb``,
``quantizer``, ``project_q``, ``final_proj``, ``label_embs_concat``, ...) are ignored; any other
unknown key, missing key or wrong shape is reported by ``check_state_dict``.
"""
from __future__ import annotations

import ast
import os
import re

import numpy as np

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format, torch_pickle
from speechinterp.convert.huggingface_wav2vec2 import (_parse_bool, make_encoder,
                                                       params_from_hf_state)
from speechinterp.convert.keys import check_state_dict
from speechinterp.encoders.wav2vec2 import Wav2Vec2Config

PRETRAINING_KEYS = ("mask_emb", "quantizer.", "input_quantizer.", "project_q.", "project_inp.",
                    "final_proj.", "label_embs_concat", "target_glu.", "project_hid.")
FINETUNED_PREFIX = "w2v_encoder.w2v_model."
DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] + [(512, 2, 2)]"


# ---- configuration ---------------------------------------------------------------------
def plain(obj):
    """Pickled config objects (Namespace, omegaconf DictConfig / ListConfig / nodes) -> dicts."""
    if isinstance(obj, torch_pickle.Opaque):
        state = obj.__dict__.get("state")
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}      # (dict state, slot state)
        if isinstance(state, dict):
            if "_content" in state:                       # omegaconf container
                return plain(state["_content"])
            if "_val" in state:                           # omegaconf value node
                return plain(state["_val"])
            return {k: plain(v) for k, v in state.items()}
        return None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    return obj


def eval_conv_layers(expr: str) -> list:
    """Evaluate a ``conv_feature_layers`` string: list/tuple literals, ``+`` and ``*`` only."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ValueError(f"unsupported conv_feature_layers expression: {expr!r}")
    layers = ev(ast.parse(expr, mode="eval"))
    if not all(isinstance(l, tuple) and len(l) == 3 for l in layers):
        raise ValueError(f"conv_feature_layers must list (dim, kernel, stride): {expr!r}")
    return layers


def checkpoint_config(ckpt: dict) -> tuple[dict, dict, str]:
    """(model cfg, task cfg, model name) of a checkpoint, following fine-tuned ``w2v_args``."""
    if ckpt.get("cfg") is not None:
        cfg = plain(ckpt["cfg"]) or {}
        model, task = dict(cfg.get("model") or {}), dict(cfg.get("task") or {})
    elif ckpt.get("args") is not None:
        args = plain(ckpt["args"]) or {}
        model, task = dict(args), dict(args)
        model.setdefault("_name", args.get("arch"))
    else:
        raise ValueError("no 'cfg' or 'args' in the checkpoint")
    name = str(model.get("_name") or "")
    w2v = model.get("w2v_args")
    if w2v:
        w2v = plain(w2v)
        if "model" in w2v:
            model, task = dict(w2v["model"]), dict(w2v.get("task") or task)
        else:
            model, task = dict(w2v), dict(w2v)
        name = str(model.get("_name") or model.get("arch") or name)
    return model, task, name


def config_from_fairseq(model: dict, name: str) -> Wav2Vec2Config:
    """Our config from a fairseq model cfg (fairseq's dataclass defaults for absent fields)."""
    g = lambda k, default: default if model.get(k) is None else model[k]
    layers = eval_conv_layers(g("conv_feature_layers", DEFAULT_CONV))
    if g("layer_type", "transformer") != "transformer":
        raise ValueError(f"layer_type {model['layer_type']!r} (conformer) is not supported")
    depth = int(g("pos_conv_depth", 1))
    conv_pos = int(g("conv_pos", 128))
    return Wav2Vec2Config(
        model_type="hubert" if "hubert" in name else "wav2vec2",
        conv_dim=tuple(int(l[0]) for l in layers),
        conv_kernel=tuple(int(l[1]) for l in layers),
        conv_stride=tuple(int(l[2]) for l in layers),
        conv_bias=bool(g("conv_bias", False)),
        feat_extract_norm="layer" if g("extractor_mode", "default") == "layer_norm" else "group",
        hidden_size=int(g("encoder_embed_dim", 768)),
        num_hidden_layers=int(g("encoder_layers", 12)),
        num_attention_heads=int(g("encoder_attention_heads", 12)),
        intermediate_size=int(g("encoder_ffn_embed_dim", 3072)),
        hidden_act=str(g("activation_fn", "gelu")),
        layer_norm_eps=1e-5,
        do_stable_layer_norm=bool(g("layer_norm_first", False)),
        pos_conv_kernel=max(3, conv_pos // depth) if depth > 1 else conv_pos,
        pos_conv_groups=int(g("conv_pos_groups", 16)),
        pos_conv_depth=depth,
        pos_conv_batch_norm=bool(g("conv_pos_batch_norm", False)),
    )


# ---- state dict ------------------------------------------------------------------------
def expected_fairseq_shapes(cfg: Wav2Vec2Config, has_proj: bool) -> dict:
    """fairseq key -> shape for ``cfg`` (pretraining-only keys excluded)."""
    s = {}
    cin = 1
    for i, (c, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        pre = f"feature_extractor.conv_layers.{i}."
        s[pre + "0.weight"] = (c, cin, k)
        if cfg.conv_bias:
            s[pre + "0.bias"] = (c,)
        if cfg.feat_extract_norm == "layer":
            s[pre + "2.1.weight"] = s[pre + "2.1.bias"] = (c,)
        elif i == 0:
            s[pre + "2.weight"] = s[pre + "2.bias"] = (c,)
        cin = c
    d, c, f = cfg.hidden_size, cfg.conv_dim[-1], cfg.intermediate_size
    if has_proj:
        s["post_extract_proj.weight"] = (d, c)
        s["post_extract_proj.bias"] = (d,)
    s["layer_norm.weight"] = s["layer_norm.bias"] = (c,)
    kshape = (d, d // cfg.pos_conv_groups, cfg.pos_conv_kernel)
    if cfg.pos_conv_depth > 1:
        for i in range(cfg.pos_conv_depth):
            s[f"encoder.pos_conv.{i}.0.weight"] = kshape
            s[f"encoder.pos_conv.{i}.0.bias"] = (d,)
    elif cfg.pos_conv_batch_norm:
        for n in ("weight", "bias", "running_mean", "running_var"):
            s[f"encoder.pos_conv.0.{n}"] = (d,)
        s["encoder.pos_conv.0.num_batches_tracked"] = ()
        s["encoder.pos_conv.1.weight"] = kshape
        s["encoder.pos_conv.1.bias"] = (d,)
    else:
        s["encoder.pos_conv.0.weight_g"] = (1, 1, cfg.pos_conv_kernel)
        s["encoder.pos_conv.0.weight_v"] = kshape
        s["encoder.pos_conv.0.bias"] = (d,)
    s["encoder.layer_norm.weight"] = s["encoder.layer_norm.bias"] = (d,)
    for i in range(cfg.num_hidden_layers):
        pre = f"encoder.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[pre + f"self_attn.{n}.weight"] = (d, d)
            s[pre + f"self_attn.{n}.bias"] = (d,)
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            s[pre + f"{n}.weight"] = s[pre + f"{n}.bias"] = (d,)
        s[pre + "fc1.weight"], s[pre + "fc1.bias"] = (f, d), (f,)
        s[pre + "fc2.weight"], s[pre + "fc2.bias"] = (d, f), (d,)
    return s


_RENAMES = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.1\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.", r"feature_extractor.conv_layers.\1.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.", r"encoder.layers.\1.attention."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"encoder.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"encoder.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"encoder.layers.\1.feed_forward.output_dense."),
]


def to_hf_names(state: dict, cfg: Wav2Vec2Config) -> dict:
    """fairseq names -> Hugging Face base-model names."""
    out = {}
    for k, v in state.items():
        if k.startswith("encoder.pos_conv."):
            rest = k[len("encoder.pos_conv."):]
            if cfg.pos_conv_depth > 1:
                i, _, name = rest.split(".", 2)
                k = f"encoder.pos_conv_embed.layers.{i}.conv.{name}"
            elif cfg.pos_conv_batch_norm:
                i, name = rest.split(".", 1)
                k = ("encoder.pos_conv_embed.batch_norm." if i == "0"
                     else "encoder.pos_conv_embed.conv.") + name
            else:
                k = "encoder.pos_conv_embed.conv." + rest.split(".", 1)[1]
        else:
            for pat, rep in _RENAMES:
                k2 = re.sub(pat, rep, k)
                if k2 != k:
                    k = k2
                    break
        out[k] = v
    if "feature_projection.projection.weight" not in out:   # no post_extract_proj: identity
        d = cfg.hidden_size
        out["feature_projection.projection.weight"] = np.eye(d, dtype=np.float32)
        out["feature_projection.projection.bias"] = np.zeros(d, np.float32)
    return out


def read_checkpoint(path: str) -> dict:
    obj = torch_pickle.load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return obj


def model_state(ckpt: dict) -> dict:
    """The encoder's fairseq state dict: fine-tuning prefix stripped, pretraining keys dropped."""
    state = {k: v for k, v in ckpt["model"].items() if hasattr(v, "shape")}
    if any(k.startswith(FINETUNED_PREFIX) for k in state):
        state = {k[len(FINETUNED_PREFIX):]: v for k, v in state.items()
                 if k.startswith(FINETUNED_PREFIX)}
    return {k: np.asarray(v) for k, v in state.items() if not k.startswith(PRETRAINING_KEYS)}


def detect(path: str) -> bool:
    """A fairseq wav2vec2 / HuBERT checkpoint: judged from the pickle's key names only, so that
    auto-detection does not read gigabytes of weights."""
    if not os.path.isfile(path) or not path.endswith((".pt", ".pth", ".ckpt")):
        return False
    blob = torch_pickle.pickle_bytes(path)
    return (b"feature_extractor.conv_layers.0.0.weight" in blob
            and b"self_attn.k_proj.weight" in blob and (b"cfg" in blob or b"args" in blob))


@register_format("fairseq_wav2vec2", detect,
                 "fairseq wav2vec 2.0 / XLS-R / HuBERT checkpoint (.pt with model + cfg/args)")
def convert(path: str, normalize=None, dtype: str = "float32", **options):
    """Encoder from a fairseq ``.pt``; ``normalize`` overrides ``task.normalize``."""
    if options:
        raise TypeError(f"unknown fairseq_wav2vec2 options: {sorted(options)}")
    ckpt = read_checkpoint(path)
    model_cfg, task_cfg, name = checkpoint_config(ckpt)
    cfg = config_from_fairseq(model_cfg, name)
    cfg.dtype = dtype
    cfg.__post_init__()
    state = model_state(ckpt)
    del ckpt                                  # optimizer state and the like
    check_state_dict(state, expected_fairseq_shapes(cfg, "post_extract_proj.weight" in state),
                     path)
    params = params_from_hf_state(to_hf_names(state, cfg), cfg, source=path, consume=True)
    norm = _parse_bool(normalize) if normalize is not None else bool(task_cfg.get("normalize",
                                                                                   False))
    return make_encoder(cfg, params, norm, sha256_of(path))
