"""Read CTranslate2 Whisper models (``model.bin`` + ``config.json``) without ctranslate2 or torch.

``model.bin`` layout, as written by ``ModelSpec._serialize`` (python/ctranslate2/specs/model_spec.py)
and read by ``Model::load`` (src/models/model.cc), all integers little-endian:

- ``uint32`` binary version (1..6 are known);
- version >= 2: spec name (string) and ``uint32`` spec revision;
- ``uint32`` number of variables, then per variable: name (string), ``uint8`` rank,
  ``rank x uint32`` dims, then for version >= 4 an ``uint8`` dtype id (DataType enum order:
  float32, int8, int16, int32, float16, bfloat16) and an ``uint32`` byte count; for versions < 4
  an ``uint8`` item size (4: float32, 2: int16, 1: int8) and an ``uint32`` element count; then
  the raw bytes;
- version >= 3: ``uint32`` number of aliases, then (alias, target) string pairs.

A string is an ``uint16`` length (counting a trailing NUL) followed by that many bytes.
Quantized weights carry a ``<name>_scale`` variable: int8 per output row (``w / scale``), int16
one scalar. Whisper encoder variables (``WhisperEncoderSpec``, ctranslate2/specs/whisper_spec.py)
map to Hugging Face ``WhisperEncoder`` names; the fused QKV ``self_attention/linear_0`` is split
(CTranslate2's converter stores zeros for the key bias, which HF does not have; a key bias adds
the same ``q.b_k`` to every logit of a query, so dropping it never changes the attention).
"""
from __future__ import annotations

import dataclasses
import json
import mmap
import os
import re
import struct

import numpy as np

from speechinterp.convert import register_format
from speechinterp.convert.keys import CheckpointMismatchError, check_state_dict

BINARY_FILE = "model.bin"
MAX_BINARY_VERSION = 6
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # DataType enum order
_ITEM_SIZE_DTYPES = {4: "float32", 2: "int16", 1: "int8"}  # binary versions < 4
_NUM_HEADS_DEFAULT = 8  # WhisperEncoder: get_attribute_with_default(scope + "/num_heads", 8)


class CT2FormatError(ValueError):
    """A ``model.bin`` that is truncated, corrupt or not a supported CTranslate2 model."""


@dataclasses.dataclass
class CT2Model:
    """The parsed contents of a CTranslate2 model directory (variables in their stored dtype;
    bfloat16 is returned as float32)."""
    path: str  # the model.bin file
    binary_version: int
    spec: str
    spec_revision: int
    variables: dict  # name -> np.ndarray
    aliases: dict  # alias -> variable name
    config: dict  # config.json beside model.bin ({} when absent)

    def get(self, name: str) -> np.ndarray:
        """A variable by name or alias, as float32 (int8/int16 weights dequantized)."""
        return _dequantized(self, name)


def model_bin_path(path: str) -> str:
    """``path`` itself if it is a file, else ``path/model.bin``."""
    return path if os.path.isfile(path) else os.path.join(path, BINARY_FILE)


class _Reader:
    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str):
        if self.pos + n > len(self.buf):
            raise CT2FormatError(
                f"{self.path}: truncated or corrupt CTranslate2 model: {what} needs {n} bytes "
                f"at offset {self.pos} but the file has {len(self.buf)} bytes")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        start = self.take(n, what)
        raw = bytes(self.buf[start:start + n])
        if n == 0 or raw[-1] != 0 or 0 in raw[:-1]:
            raise CT2FormatError(f"{self.path}: corrupt CTranslate2 model: {what} at offset "
                                 f"{start} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.path}: corrupt CTranslate2 model: {what} at offset "
                                 f"{start} is not UTF-8") from None


def _read_header(r: _Reader) -> tuple[int, str, int]:
    version = r.unpack("I", "the binary version")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise CT2FormatError(f"{r.path}: not a supported CTranslate2 model.bin: binary version "
                             f"{version} (this reader knows 1..{MAX_BINARY_VERSION})")
    if version >= 2:
        spec = r.string("the spec name")
        revision = r.unpack("I", "the spec revision")
    else:
        spec, revision = "", 1
    return version, spec, revision


def read_spec_name(path: str) -> str:
    """The spec name in a model.bin header (``""`` for binary version 1), reading only the header."""
    path = model_bin_path(path)
    with open(path, "rb") as f:
        head = f.read(4 + 2 + 1024)
    return _read_header(_Reader(head, path))[1]


def _from_bytes(raw, dtype: str, shape: tuple) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_model(path: str) -> CT2Model:
    """Parse ``model.bin`` (``path`` is the file or its directory) and ``config.json`` beside it.

    Arrays are read-only views of a memory map (float16/int8 as stored); use :meth:`CT2Model.get`
    for float32 values.
    """
    path = model_bin_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no CTranslate2 {BINARY_FILE} at {path}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CT2FormatError(f"{path}: empty file, not a CTranslate2 model")
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    r = _Reader(buf, path)
    version, spec, revision = _read_header(r)
    n_vars = r.unpack("I", "the number of variables")
    variables = {}
    for i in range(n_vars):
        name = r.string(f"the name of variable {i}")
        rank = r.unpack("B", f"the rank of {name!r}")
        shape = tuple(r.unpack("I", f"dim {d} of {name!r}") for d in range(rank))
        if version >= 4:
            type_id = r.unpack("B", f"the dtype of {name!r}")
            if type_id >= len(_DTYPES):
                raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} has "
                                     f"unknown dtype id {type_id} at offset {r.pos - 1}")
            dtype = _DTYPES[type_id]
            num_bytes = r.unpack("I", f"the byte count of {name!r}")
        else:
            item = r.unpack("B", f"the item size of {name!r}")
            if item not in _ITEM_SIZE_DTYPES:
                raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} has "
                                     f"unknown item size {item}")
            dtype = _ITEM_SIZE_DTYPES[item]
            num_bytes = r.unpack("I", f"the element count of {name!r}") * item
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        expected = int(np.prod(shape, dtype=np.int64)) * itemsize
        if num_bytes != expected:
            raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} of shape "
                                 f"{shape} and dtype {dtype} declares {num_bytes} bytes, "
                                 f"expected {expected}")
        if name in variables:
            raise CT2FormatError(f"{path}: corrupt CTranslate2 model: variable {name!r} twice")
        start = r.take(num_bytes, f"the data of {name!r}")
        variables[name] = _from_bytes(buf[start:start + num_bytes], dtype, shape)
    aliases = {}
    if version >= 3:
        n_alias = r.unpack("I", "the number of aliases")
        for i in range(n_alias):
            alias = r.string(f"alias {i}")
            aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != size:
        raise CT2FormatError(f"{path}: corrupt CTranslate2 model: {size - r.pos} unexpected bytes "
                             f"after the last record (offset {r.pos})")
    config = {}
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    if os.path.isfile(cfg_path):
        try:
            with open(cfg_path) as f:
                config = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise CT2FormatError(f"{cfg_path}: not valid JSON: {e}") from None
        if not isinstance(config, dict):
            raise CT2FormatError(f"{cfg_path}: expected a JSON object")
    return CT2Model(path, version, spec, revision, variables, aliases, config)


def write_model(path: str, spec: str, spec_revision: int, variables: dict, aliases: dict = (),
                binary_version: int = MAX_BINARY_VERSION) -> None:
    """Write a ``model.bin`` as ``ModelSpec._serialize`` does (variables in sorted name order); the
    inverse of :func:`read_model`. Versions < 4 store item sizes (float32/int16/int8 only),
    versions < 3 have no aliases and version 1 no spec name."""
    if not 1 <= binary_version <= MAX_BINARY_VERSION:
        raise ValueError(f"binary version {binary_version} is not in 1..{MAX_BINARY_VERSION}")
    aliases = dict(aliases)
    if (binary_version < 3 and aliases) or (binary_version < 2 and spec):
        raise ValueError(f"binary version {binary_version} cannot hold aliases or a spec name")

    def string(s):
        b = s.encode("utf-8") + b"\0"
        return struct.pack("<H", len(b)) + b

    with open(path, "wb") as f:
        f.write(struct.pack("<I", binary_version))
        if binary_version >= 2:
            f.write(string(spec) + struct.pack("<I", spec_revision))
        f.write(struct.pack("<I", len(variables)))
        for name in sorted(variables):
            value = np.asarray(variables[name])
            data = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
            f.write(string(name) + struct.pack("<B", value.ndim))
            f.write(b"".join(struct.pack("<I", d) for d in value.shape))
            if binary_version >= 4:
                f.write(struct.pack("<BI", _DTYPES.index(value.dtype.name), len(data)))
            else:
                if _ITEM_SIZE_DTYPES.get(value.dtype.itemsize) != value.dtype.name:
                    raise ValueError(f"binary version {binary_version} cannot store {value.dtype}")
                f.write(struct.pack("<BI", value.dtype.itemsize, value.size))
            f.write(data)
        if binary_version >= 3:
            f.write(struct.pack("<I", len(aliases)))
            for alias in sorted(aliases):
                f.write(string(alias) + string(aliases[alias]))


def _resolve(model: CT2Model, name: str) -> str | None:
    seen = set()
    while name not in model.variables:
        if name in seen or name not in model.aliases:
            return None
        seen.add(name)
        name = model.aliases[name]
    return name


def _dequantized(model: CT2Model, name: str) -> np.ndarray:
    real = _resolve(model, name)
    if real is None:
        raise KeyError(f"{model.path}: no variable {name!r}")
    value = model.variables[real]
    if value.dtype.kind == "f":
        return np.array(value, np.float32)  # a copy, not a view of the memory map
    if not real.endswith("weight"):  # Model::is_quantizable: only "...weight" is quantized
        return value  # integer attributes (e.g. num_heads) keep their dtype
    if real.rsplit("/", 1)[0] + "/weight_zero" in model.variables:
        raise CT2FormatError(f"{model.path}: {real!r} is a pre-quantized (AWQ) weight; "
                             "only float32/float16/bfloat16/int8/int16 models are supported")
    scale_name = _resolve(model, real + "_scale")
    if value.dtype not in (np.int8, np.int16):
        raise CT2FormatError(f"{model.path}: weight {real!r} has unsupported dtype {value.dtype}")
    if scale_name is None:
        raise CT2FormatError(f"{model.path}: quantized weight {real!r} has no {real}_scale")
    scale = np.asarray(model.variables[scale_name], np.float32)
    if scale.ndim == 1:  # int8: one scale per output row (model_spec.py _quantize)
        scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
    return value.astype(np.float32) / scale


# ---------------------------------------------------------------- Whisper encoder -> HF names

_LAYER = re.compile(r"^encoder/layer_(\d+)/")


def encoder_num_layers(model: CT2Model) -> int:
    """Number of encoder layers: ``encoder/layer_0 ..`` as CTranslate2's build_layers_list counts."""
    names = set(model.variables) | set(model.aliases)
    present = {int(m.group(1)) for n in names if (m := _LAYER.match(n))}
    n = 0
    while n in present:
        n += 1
    return n


def _ct2_names(i: int) -> dict[str, str]:
    """CTranslate2 encoder layer ``i`` variable -> HF-relative name (fused QKV handled apart)."""
    p, q = f"encoder/layer_{i}/", f"layers.{i}."
    return {p + "self_attention/linear_1/weight": q + "self_attn.out_proj.weight",
            p + "self_attention/linear_1/bias": q + "self_attn.out_proj.bias",
            p + "self_attention/layer_norm/gamma": q + "self_attn_layer_norm.weight",
            p + "self_attention/layer_norm/beta": q + "self_attn_layer_norm.bias",
            p + "ffn/linear_0/weight": q + "fc1.weight",
            p + "ffn/linear_0/bias": q + "fc1.bias",
            p + "ffn/linear_1/weight": q + "fc2.weight",
            p + "ffn/linear_1/bias": q + "fc2.bias",
            p + "ffn/layer_norm/gamma": q + "final_layer_norm.weight",
            p + "ffn/layer_norm/beta": q + "final_layer_norm.bias"}


_TOP = {"encoder/conv1/weight": "conv1.weight", "encoder/conv1/bias": "conv1.bias",
        "encoder/conv2/weight": "conv2.weight", "encoder/conv2/bias": "conv2.bias",
        "encoder/position_encodings/encodings": "embed_positions.weight",
        "encoder/layer_norm/gamma": "layer_norm.weight", "encoder/layer_norm/beta": "layer_norm.bias"}


def _expected_ct2_shapes(cfg: dict) -> dict[str, tuple]:
    d, f, m = cfg["d_model"], cfg["encoder_ffn_dim"], cfg["num_mel_bins"]
    shapes = {"encoder/conv1/weight": (d, m, 3), "encoder/conv1/bias": (d,),
              "encoder/conv2/weight": (d, d, 3), "encoder/conv2/bias": (d,),
              "encoder/position_encodings/encodings": (cfg["max_source_positions"], d),
              "encoder/layer_norm/gamma": (d,), "encoder/layer_norm/beta": (d,),
              "encoder/num_heads": ()}
    for i in range(cfg["encoder_layers"]):
        p = f"encoder/layer_{i}/"
        shapes.update({p + "self_attention/linear_0/weight": (3 * d, d),
                       p + "self_attention/linear_0/bias": (3 * d,),
                       p + "self_attention/linear_1/weight": (d, d),
                       p + "self_attention/linear_1/bias": (d,),
                       p + "self_attention/layer_norm/gamma": (d,),
                       p + "self_attention/layer_norm/beta": (d,),
                       p + "ffn/linear_0/weight": (f, d), p + "ffn/linear_0/bias": (f,),
                       p + "ffn/linear_1/weight": (d, f), p + "ffn/linear_1/bias": (d,),
                       p + "ffn/layer_norm/gamma": (d,), p + "ffn/layer_norm/beta": (d,)})
    return shapes


def _check_whisper(model: CT2Model) -> None:
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"{model.path}: CTranslate2 spec {model.spec or '(none)'!r} is not "
                             "'WhisperSpec'; only Whisper models are supported")


def whisper_encoder_state(model: CT2Model) -> tuple[dict, dict]:
    """``(config, state)``: an HF ``WhisperConfig``-style dict built from the variable shapes and
    the encoder state dict with HF names relative to ``WhisperEncoder`` (float32 numpy).

    Raises :class:`CheckpointMismatchError` listing missing / unexpected / mis-shaped encoder
    variables (CTranslate2 names); decoder variables are ignored.
    """
    _check_whisper(model)
    names = set(model.variables) | set(model.aliases)
    enc = {n for n in names if n.startswith("encoder/")  # quantization scales are not listed
           and not (n.endswith("_scale") and n[:-len("_scale")] in names)}
    shape = lambda n: tuple(model.variables[_resolve(model, n)].shape) if n in names else None
    conv1, fc1 = shape("encoder/conv1/weight"), shape("encoder/layer_0/ffn/linear_0/weight")
    pos = shape("encoder/position_encodings/encodings")
    anchors = {"encoder/conv1/weight": conv1, "encoder/position_encodings/encodings": pos}
    if None in anchors.values() or len(conv1) != 3 or len(pos) != 2:
        raise CheckpointMismatchError(
            f"{model.path} does not match the Whisper encoder: cannot read its dimensions from "
            + ", ".join(f"{k} (shape {v})" for k, v in anchors.items()))
    num_heads = (int(np.asarray(model.get("encoder/num_heads")))
                 if "encoder/num_heads" in names else _NUM_HEADS_DEFAULT)
    n_layers = encoder_num_layers(model)
    cfg = {"num_mel_bins": int(conv1[1]), "d_model": int(conv1[0]),
           "encoder_layers": n_layers, "encoder_attention_heads": num_heads,
           "encoder_ffn_dim": int(fc1[0]) if fc1 else 4 * int(conv1[0]),
           "max_source_positions": int(pos[0]), "activation_function": "gelu"}
    expected = _expected_ct2_shapes(cfg)
    if "encoder/num_heads" not in names:
        expected.pop("encoder/num_heads")
    if not any(n.endswith("self_attention/linear_0/bias") for n in enc):
        expected = {k: v for k, v in expected.items() if not k.endswith("linear_0/bias")}
    check_state_dict({n: np.broadcast_to(np.uint8(0), shape(n)) for n in enc}, expected,
                     f"{model.path} (CTranslate2 encoder variables)")
    if cfg["d_model"] % num_heads:
        raise CheckpointMismatchError(f"{model.path}: d_model {cfg['d_model']} is not divisible "
                                      f"by encoder/num_heads {num_heads}")
    state = {hf: model.get(ct2) for ct2, hf in _TOP.items()}
    d = cfg["d_model"]
    for i in range(n_layers):
        state.update({hf: model.get(ct2) for ct2, hf in _ct2_names(i).items()})
        p, q = f"encoder/layer_{i}/self_attention/linear_0/", f"layers.{i}.self_attn."
        w = model.get(p + "weight")
        b = model.get(p + "bias") if p + "bias" in names else np.zeros(3 * d, np.float32)
        for j, part in enumerate("qkv"):
            state[f"{q}{part}_proj.weight"] = np.ascontiguousarray(w[j * d:(j + 1) * d])
        state[q + "q_proj.bias"] = b[:d].copy()
        state[q + "v_proj.bias"] = b[2 * d:].copy()
    return cfg, state


def detect(path: str) -> bool:
    """A ``model.bin`` (or a directory holding one) whose spec is ``WhisperSpec``."""
    path = model_bin_path(path)
    return (os.path.basename(path) == BINARY_FILE and os.path.isfile(path)
            and read_spec_name(path) == "WhisperSpec")


@register_format("ctranslate2_whisper", detect,
                 "CTranslate2 Whisper model directory (model.bin, WhisperSpec; encoder only)")
def convert(path: str, pad_to_30s=True, dtype: str = "float32", **options):
    """The ``whisper`` family encoder from a CTranslate2 Whisper model (``path``: dir or model.bin);
    options as for ``huggingface_whisper`` (``pad_to_30s``, ``dtype``)."""
    from speechinterp.checkpoint import sha256_of
    from speechinterp.convert.huggingface_whisper import whisper_encoder_from_state

    if options:
        raise TypeError(f"unknown ctranslate2_whisper options: {sorted(options)}")
    model = read_model(path)
    cfg, state = whisper_encoder_state(model)
    return whisper_encoder_from_state(cfg, state, source=model.path,
                                      source_sha256=sha256_of(model.path),
                                      pad_to_30s=pad_to_30s, dtype=dtype)
