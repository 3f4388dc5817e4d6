"""Convert SpeechBrain x-vector / ECAPA-TDNN checkpoints to the ``xvector`` / ``ecapa`` families.

Source (format ``speechbrain``): a directory as SpeechBrain publishes it
(``spkrec-xvect-voxceleb``, ``spkrec-ecapa-voxceleb``): ``embedding_model.ckpt`` (``torch.save``
of the model's state dict, read without torch by :mod:`speechinterp.convert.torch_pickle`) and
``hyperparams.yaml``, from which the ``embedding_model`` (``!new:...Xvector.Xvector`` or
``!new:...ECAPA_TDNN.ECAPA_TDNN``) arguments, the ``compute_features`` (``Fbank``) arguments and
the ``mean_var_norm`` (``InputNormalization``, sentence) arguments are read. The file is
HyperPyYAML: tags (``!new:``, ``!name:``, ``!apply:``, ``!ref``, ``!copy``, ``!tuple``,
``!include:``, ``!PLACEHOLDER``) are parsed by a tolerant ``yaml.SafeLoader``, never executed;
``!ref <key>`` is resolved against the file's top-level keys.

The path may also be the ``embedding_model.ckpt`` file itself: the family is then taken from
``family=xvector|ecapa`` (``--option=family=ecapa``) or else recognised from the state dict's
keys; the architecture from a ``hyperparams.yaml`` beside the file (or ``hyperparams=PATH``)
when there is one, else the published model's defaults; any config field can be overridden
by an option (``--option=n_mels=80``, ``--option=channels=[512,512,512,512,1536]``).

Other files of a published directory (``mean_var_norm_emb.ckpt``, ``classifier.ckpt``,
``label_encoder.txt``) are ignored: the encoder's ``embedding`` is the ``embedding_model``
output, what ``EncoderClassifier.encode_batch`` returns with its default ``normalize=False``.

State-dict keys (BatchNorm ``num_batches_tracked`` buffers are dropped): x-vector
``blocks.{3i}.conv.{weight,bias}`` (TDNN i+1 conv), ``blocks.{3i+2}.norm.{weight,bias,
running_mean,running_var}`` (its BatchNorm), ``blocks.{3N+1}.w.{weight,bias}`` (embedding
Linear); ECAPA ``blocks.0.{conv.conv,norm.norm}.*``, ``blocks.i.{tdnn1,tdnn2}.*``,
``blocks.i.res2net_block.blocks.j.*``, ``blocks.i.se_block.conv{1,2}.conv.*``,
``blocks.i.shortcut.conv.*``, ``mfa.*``, ``asp.tdnn.*``, ``asp.conv.conv.*``, ``asp_bn.norm.*``,
``fc.conv.*``. Conv weights [O, C/G, k] become kernels [k, C/G, O].
"""
from __future__ import annotations

import ast
import dataclasses
import operator
import os
import re

import numpy as np
import yaml

from speechinterp.checkpoint import sha256_of
from speechinterp.convert import register_format, torch_pickle
from speechinterp.convert.keys import check_state_dict
from speechinterp.encoders.tdnn import ECAPAConfig, ECAPAEncoder, XvectorConfig, XvectorEncoder

CKPT, HPARAMS = "embedding_model.ckpt", "hyperparams.yaml"
FAMILIES = {"xvector": (XvectorConfig, XvectorEncoder), "ecapa": (ECAPAConfig, ECAPAEncoder)}


# ---------------------------------------------------------------------------------------
# tolerant HyperPyYAML reading
@dataclasses.dataclass
class Tagged:
    """A HyperPyYAML tagged node: ``kind`` (new, name, apply, ref, ...), ``target``, ``value``."""

    kind: str
    target: str
    value: object


class _Loader(yaml.SafeLoader):
    pass


def _construct_tagged(loader, suffix, node):
    kind, _, target = suffix.partition(":")
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(kind, target, value)


_Loader.add_multi_constructor("!", _construct_tagged)

_REF = re.compile(r"<([^<>]+)>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
        ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _arith(expr: str):
    """Evaluate a numeric expression (what ``!ref <a> * 2`` may hold); None if it is not one."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.operand))
        raise ValueError
    try:
        return ev(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError):
        return None


class HyperParams:
    """Top-level mapping of a ``hyperparams.yaml`` with ``!ref`` resolution."""

    def __init__(self, path: str):
        self.path = path
        with open(path) as f:
            data = yaml.load(f, Loader=_Loader)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a YAML mapping")
        self.data = data

    def _lookup(self, key: str, seen: tuple):
        parts = re.findall(r"[^\[\]]+", key.strip())
        if not parts or parts[0] not in self.data:
            raise KeyError(f"{self.path}: !ref <{key}> names no top-level key")
        if key in seen:
            raise ValueError(f"{self.path}: circular !ref <{key}>")
        val = self.resolve(self.data[parts[0]], seen + (key,))
        for p in parts[1:]:
            val = val[int(p)] if isinstance(val, list) else val[p]
        return val

    def resolve(self, v, seen: tuple = ()):
        """Replace ``!ref`` / ``!copy`` nodes by their values, recursively."""
        if isinstance(v, Tagged) and v.kind in ("ref", "copy"):
            text = str(v.value).strip()
            whole = _REF.fullmatch(text)
            if whole:
                return self._lookup(whole.group(1), seen)
            out = _REF.sub(lambda m: str(self._lookup(m.group(1), seen)), text)
            num = _arith(out)
            return out if num is None else num
        if isinstance(v, Tagged) and v.kind == "tuple":
            val = self.resolve(v.value, seen)
            return tuple(ast.literal_eval(val) if isinstance(val, str) else val)
        if isinstance(v, Tagged):
            return Tagged(v.kind, v.target, self.resolve(v.value, seen))
        if isinstance(v, dict):
            return {k: self.resolve(x, seen) for k, x in v.items()}
        if isinstance(v, list):
            return [self.resolve(x, seen) for x in v]
        return v

    def get(self, key: str):
        return self.resolve(self.data[key]) if key in self.data else None


def _activation(v, where: str) -> str:
    target = v.target if isinstance(v, Tagged) else str(v)
    name = target.rsplit(".", 1)[-1]
    if name == "LeakyReLU":
        return "leaky_relu"
    if name == "ReLU":
        return "relu"
    raise ValueError(f"{where}: unsupported activation {target!r} (ReLU or LeakyReLU)")


def _args(node, where: str) -> dict:
    if node.value in (None, ""):
        return {}
    if not isinstance(node.value, dict):
        raise ValueError(f"{where}: expected keyword arguments for {node.target}")
    return dict(node.value)


_FBANK_ARGS = {"n_mels", "sample_rate", "n_fft", "win_length", "hop_length", "f_min", "f_max"}
_XVECTOR_ARGS = {"in_channels": "n_mels", "tdnn_blocks": "tdnn_blocks",
                 "tdnn_channels": "tdnn_channels", "tdnn_kernel_sizes": "tdnn_kernel_sizes",
                 "tdnn_dilations": "tdnn_dilations", "lin_neurons": "lin_neurons"}
_ECAPA_ARGS = {"input_size": "n_mels", "channels": "channels", "kernel_sizes": "kernel_sizes",
               "dilations": "dilations", "attention_channels": "attention_channels",
               "res2net_scale": "res2net_scale", "se_channels": "se_channels",
               "global_context": "global_context", "groups": "groups",
               "lin_neurons": "lin_neurons"}


def config_from_hparams(path: str) -> tuple[str, dict]:
    """(family, config kwargs) from a SpeechBrain ``hyperparams.yaml``."""
    hp = HyperParams(path)
    model = hp.get("embedding_model")
    if not isinstance(model, Tagged) or model.kind != "new":
        raise ValueError(f"{path}: no `embedding_model: !new:...` entry")
    cls = model.target.rsplit(".", 1)[-1]
    if cls == "Xvector":
        family, table = "xvector", _XVECTOR_ARGS
    elif cls == "ECAPA_TDNN":
        family, table = "ecapa", _ECAPA_ARGS
    else:
        raise ValueError(f"{path}: embedding_model is {model.target}, not Xvector or ECAPA_TDNN")
    kw = {}
    for k, v in _args(model, path).items():
        if k in table:
            kw[table[k]] = v
        elif k == "activation":
            kw["activation"] = _activation(v, path)
        elif k in ("device", "dropout"):
            continue                                      # no effect on inference
        else:
            raise ValueError(f"{path}: unsupported {cls} argument {k!r}")
    model_mels = kw.pop("n_mels", None)

    feats = hp.get("compute_features")
    if isinstance(feats, Tagged):
        if not feats.target.endswith("Fbank"):
            raise ValueError(f"{path}: compute_features is {feats.target}, not Fbank")
        for k, v in _args(feats, path).items():
            if k in _FBANK_ARGS:
                kw[k] = v
            elif k in ("deltas", "context", "requires_grad") and not v:
                continue
            elif k == "filter_shape" and v == "triangular":
                continue
            elif k in ("left_frames", "right_frames", "param_change_factor",
                       "param_rand_factor"):
                continue                                  # unused without context / training
            else:
                raise ValueError(f"{path}: unsupported Fbank setting {k}={v!r}")
    kw.setdefault("n_mels", 40 if isinstance(feats, Tagged) else model_mels)  # Fbank default
    if model_mels is not None and kw["n_mels"] != model_mels:
        raise ValueError(f"{path}: Fbank n_mels {kw['n_mels']} but the model expects "
                         f"{model_mels} input features")

    norm = hp.get("mean_var_norm")
    if not isinstance(norm, Tagged):
        raise ValueError(f"{path}: no `mean_var_norm: !new:...InputNormalization` entry")
    nargs = _args(norm, path)
    if nargs.get("norm_type", "global") != "sentence":
        raise ValueError(f"{path}: mean_var_norm norm_type {nargs.get('norm_type', 'global')!r}"
                         " is not supported (only 'sentence', as the published models)")
    kw["std_norm"] = bool(nargs.get("std_norm", True))
    return family, kw


# ---------------------------------------------------------------------------------------
# key mapping
def _conv_keys(prefix, k, c_in, c_out, g=1):
    return {f"{prefix}.weight": (c_out, c_in // g, k), f"{prefix}.bias": (c_out,)}


def _bn_keys(prefix, c):
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}


def layout(family: str, cfg) -> list:
    """[(torch prefix, param path tuple, kind, shape info)] for every parameterised module."""
    out = []
    if family == "xvector":
        c_in = cfg.n_mels
        for i in range(cfg.tdnn_blocks):
            co, k = cfg.tdnn_channels[i], cfg.tdnn_kernel_sizes[i]
            out.append((f"blocks.{3 * i}.conv", (f"tdnn{i + 1}", "conv"), "conv", (k, c_in, co, 1)))
            out.append((f"blocks.{3 * i + 2}.norm", (f"tdnn{i + 1}", "bn"), "bn", co))
            c_in = co
        out.append((f"blocks.{3 * cfg.tdnn_blocks + 1}.w", ("embedding",), "linear",
                    (2 * c_in, cfg.lin_neurons)))
        return out
    ch, ks, gs = cfg.channels, cfg.kernel_sizes, cfg.groups

    def tdnn(prefix, path, k, c_in, c_out, g=1):
        out.append((f"{prefix}.conv.conv", path + ("conv",), "conv", (k, c_in, c_out, g)))
        out.append((f"{prefix}.norm.norm", path + ("bn",), "bn", c_out))

    tdnn("blocks.0", ("block0",), ks[0], cfg.n_mels, ch[0], gs[0])
    for i in range(1, cfg.num_se_blocks + 1):
        cin, cout, p = ch[i - 1], ch[i], f"blocks.{i}"
        sub = cout // cfg.res2net_scale
        tdnn(f"{p}.tdnn1", (f"block{i}", "tdnn1"), 1, cin, cout, gs[i])
        for j in range(cfg.res2net_scale - 1):
            tdnn(f"{p}.res2net_block.blocks.{j}", (f"block{i}", "res2net", f"r{j}"), ks[i], sub,
                 sub)
        tdnn(f"{p}.tdnn2", (f"block{i}", "tdnn2"), 1, cout, cout, gs[i])
        out.append((f"{p}.se_block.conv1.conv", (f"block{i}", "se", "conv1"), "conv",
                    (1, cout, cfg.se_channels, 1)))
        out.append((f"{p}.se_block.conv2.conv", (f"block{i}", "se", "conv2"), "conv",
                    (1, cfg.se_channels, cout, 1)))
        if cin != cout:
            out.append((f"{p}.shortcut.conv", (f"block{i}", "shortcut"), "conv",
                        (1, cin, cout, 1)))
    tdnn("mfa", ("mfa",), ks[-1], ch[-2] * cfg.num_se_blocks, ch[-1], gs[-1])
    tdnn("asp.tdnn", ("asp", "tdnn"), 1, ch[-1] * (3 if cfg.global_context else 1),
         cfg.attention_channels)
    out.append(("asp.conv.conv", ("asp", "conv"), "conv", (1, cfg.attention_channels, ch[-1], 1)))
    out.append(("asp_bn.norm", ("asp_bn",), "bn", 2 * ch[-1]))
    out.append(("fc.conv", ("fc",), "conv", (1, 2 * ch[-1], cfg.lin_neurons, 1)))
    return out


def expected_shapes(family: str, cfg) -> dict:
    shapes = {}
    for prefix, _, kind, info in layout(family, cfg):
        if kind == "conv":
            shapes.update(_conv_keys(prefix, *info))
        elif kind == "bn":
            shapes.update(_bn_keys(prefix, info))
        else:
            shapes[f"{prefix}.weight"] = (info[1], info[0])
            shapes[f"{prefix}.bias"] = (info[1],)
    return shapes


def params_from_state(state, family: str, cfg, source: str = "checkpoint"):
    """Flax parameter tree from an ``embedding_model`` state dict (keys checked first)."""
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    check_state_dict(state, expected_shapes(family, cfg), source)
    f32 = lambda k: np.asarray(state[k], np.float32)
    params = {}
    for prefix, path, kind, _ in layout(family, cfg):
        if kind == "conv":
            leaf = {"kernel": np.ascontiguousarray(f32(f"{prefix}.weight").transpose(2, 1, 0)),
                    "bias": f32(f"{prefix}.bias")}
        elif kind == "bn":
            leaf = {"scale": f32(f"{prefix}.weight"), "bias": f32(f"{prefix}.bias"),
                    "mean": f32(f"{prefix}.running_mean"), "var": f32(f"{prefix}.running_var")}
        else:
            leaf = {"kernel": np.ascontiguousarray(f32(f"{prefix}.weight").T),
                    "bias": f32(f"{prefix}.bias")}
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return params


# ---------------------------------------------------------------------------------------
def _state(path: str) -> dict:
    obj = torch_pickle.load(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict")
    return {k: np.asarray(v) for k, v in obj.items() if hasattr(v, "shape")}


def family_from_keys(keys) -> str | None:
    keys = set(keys)
    if "asp_bn.norm.weight" in keys and "blocks.0.conv.conv.weight" in keys:
        return "ecapa"
    if "blocks.0.conv.weight" in keys and any(re.fullmatch(r"blocks\.\d+\.w\.weight", k)
                                              for k in keys):
        return "xvector"
    return None


def _paths(path: str, hparams: str | None = None):
    if os.path.isdir(path):
        ckpt, hp = os.path.join(path, CKPT), os.path.join(path, HPARAMS)
        if not os.path.isfile(ckpt):
            raise FileNotFoundError(f"{path}: no {CKPT}")
    else:
        ckpt, hp = path, os.path.join(os.path.dirname(os.path.abspath(path)), HPARAMS)
    if hparams:
        hp = hparams
    return ckpt, (hp if os.path.isfile(hp) else None)


def detect(path: str) -> bool:
    if os.path.isdir(path):
        if not (os.path.isfile(os.path.join(path, CKPT))
                and os.path.isfile(os.path.join(path, HPARAMS))):
            return False
        config_from_hparams(os.path.join(path, HPARAMS))
        return True
    if not path.endswith(".ckpt"):
        return False
    return family_from_keys(_state(path)) is not None


def _parse_option(v):
    return yaml.safe_load(v) if isinstance(v, str) else v


@register_format("speechbrain", detect,
                 "SpeechBrain x-vector / ECAPA-TDNN: directory with embedding_model.ckpt + "
                 "hyperparams.yaml (or the .ckpt with family=xvector|ecapa)",
                 options=lambda: ["family", "hyperparams"] + sorted(
                     {f.name for c, _ in FAMILIES.values() for f in dataclasses.fields(c)}))
def convert(path: str, **options):
    options = {k: _parse_option(v) for k, v in options.items()}
    ckpt, hp = _paths(path, options.pop("hyperparams", None))
    state = _state(ckpt)
    family = options.pop("family", None)
    kw = {}
    if hp is not None:
        hp_family, kw = config_from_hparams(hp)
        if family is not None and family != hp_family:
            raise ValueError(f"family={family} but {hp} describes a {hp_family} model")
        family = hp_family
    family = family or family_from_keys(state)
    if family not in FAMILIES:
        raise ValueError(f"{ckpt}: cannot tell x-vector from ECAPA; pass family=xvector|ecapa")
    cfg_cls, enc_cls = FAMILIES[family]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown {family} options {unknown}; known: {sorted(fields)}")
    cfg = cfg_cls(**{**kw, **options})
    params = params_from_state(state, family, cfg, source=ckpt)
    return enc_cls(config=cfg, params=params, family=family, sample_rate=cfg.sample_rate,
                   normalize_waveform=False, source_sha256=sha256_of(ckpt))
