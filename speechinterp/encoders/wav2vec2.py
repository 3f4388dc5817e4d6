"""wav2vec 2.0, XLS-R, HuBERT and data2vec-audio encoders in JAX.

Ports of transformers 5.24's PyTorch ``Wav2Vec2Model``, ``HubertModel`` and ``Data2VecAudioModel``
(``transformers/models/{wav2vec2,hubert,data2vec}/modeling_*.py``), which follow fairseq's
``Wav2Vec2Model`` / ``HubertModel``. WavLM (``wavlm.py``) reuses the pieces below.

Architecture, per ``Wav2Vec2Config``:

* feature encoder: a stack of 1-D convolutions over the raw waveform (``conv_dim``,
  ``conv_kernel``, ``conv_stride``, optional bias), each followed by GELU;
  ``feat_extract_norm="group"`` (wav2vec2 base, HuBERT base): a per-channel GroupNorm after the
  first conv only; ``"layer"`` (large-lv60, XLSR/XLS-R, data2vec-audio): a LayerNorm over channels
  after every conv.
* feature projection: LayerNorm (absent when ``feat_proj_layer_norm`` is false, as DistilHuBERT)
  and a Linear to ``hidden_size``.
* positional convolution, added to its input: one grouped conv with ``padding = K // 2``, the last
  frame dropped when ``K`` is even (``SamePad``), GELU. Its weight-norm kernel is folded into a
  plain kernel ``g * v / ||v||`` at conversion. Variants: a BatchNorm (inference statistics) before
  the conv (HuBERT ``conv_pos_batch_norm``); data2vec-audio's stack of ``pos_conv_depth`` convs,
  each followed by a LayerNorm without affine parameters and GELU.
* Transformer: post-LN layers after a LayerNorm (``do_stable_layer_norm=False``), or pre-LN
  ("stable layer norm") layers with the LayerNorm after the last layer.

Probed layers (``layer_names``): ``["cnn", "layer_0", ..., "layer_L"]``.

* ``cnn``: the feature encoder's output (the last conv block's GELU output, ``conv_dim[-1]``
  channels; HF ``model.feature_extractor(x).transpose(1, 2)``), before the projection's LayerNorm.
* ``layer_k``: HF ``output_hidden_states=True`` entry ``k``: ``layer_0`` is the input of the first
  Transformer layer (after the positional conv, and the encoder LayerNorm in the post-LN variant),
  ``layer_k`` the output of Transformer layer ``k``. As in transformers 5.x, the stable-LN
  variant's last entry is the last layer's output *before* the final encoder LayerNorm (that
  LayerNorm only feeds HF's ``last_hidden_state``, which is not a probed layer here).

A mask for a layer acts on that layer's output inside the forward pass (:func:`apply_layer_mask`),
so every later layer sees the ablation.

Padding. Each utterance of a padded batch gives the same values on its valid frames as when run
alone, unpadded, through the HF model: valid frames per layer follow HF's
``_get_feat_extract_output_lengths``; the first conv's GroupNorm statistics are taken over the
valid frames only; padded frames are zeroed before every positional convolution (after the
HuBERT BatchNorm, and before each conv of data2vec's stack) and masked out of every attention.
This intentionally differs from HF's own *batched* forward, whose GroupNorm statistics include
the padding (and whose BatchNorm / stacked positional convs let padding leak into valid frames):
HF batched outputs depend on how much padding a batch has; ours do not.

Precision: ``config.dtype="float32"`` (default; matmuls and convs at full float32 precision on
every backend) or ``"bfloat16"`` (matmul and conv operands in bfloat16 with float32 accumulation;
norms, softmax, residual stream and outputs in float32).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders.base import Encoder, apply_layer_mask, frame_mask, register

MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm")


@dataclasses.dataclass
class Wav2Vec2Config:
    """Architecture of the wav2vec 2.0 family (field names follow HF ``Wav2Vec2Config``)."""

    model_type: str = "wav2vec2"
    conv_dim: tuple = (512,) * 7
    conv_kernel: tuple = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"          # "group" or "layer"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False
    pos_conv_kernel: int = 128                # HF num_conv_pos_embeddings (conv_pos_kernel_size
    pos_conv_groups: int = 16                 #   for data2vec-audio)
    pos_conv_depth: int = 1                   # data2vec-audio: HF num_conv_pos_embeddings
    pos_conv_batch_norm: bool = False         # HuBERT conv_pos_batch_norm
    num_buckets: int = 320                    # WavLM relative position buckets
    max_bucket_distance: int = 800
    dtype: str = "float32"                    # "float32" or "bfloat16" compute

    def __post_init__(self):
        self.conv_dim = tuple(int(c) for c in self.conv_dim)
        self.conv_kernel = tuple(int(c) for c in self.conv_kernel)
        self.conv_stride = tuple(int(c) for c in self.conv_stride)
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError("conv_dim, conv_kernel and conv_stride must have the same length")
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; known: {MODEL_TYPES}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', "
                             f"not {self.feat_extract_norm!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', not {self.dtype!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        for name in ("feat_extract_activation", "hidden_act"):
            if getattr(self, name) not in ACTIVATIONS:
                raise ValueError(f"unsupported {name} {getattr(self, name)!r}; "
                                 f"known: {sorted(ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


# ---- small numeric helpers --------------------------------------------------------------------
def compute_dtype(cfg) -> jnp.dtype:
    return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def _precision(cd):
    return jax.lax.Precision.HIGHEST if cd == jnp.float32 else jax.lax.Precision.DEFAULT


def dense(x, p, cd):
    """``x @ kernel + bias`` with ``cd`` operands and a float32 result."""
    y = jnp.matmul(x.astype(cd), p["kernel"].astype(cd), precision=_precision(cd),
                   preferred_element_type=jnp.float32)
    return y + p["bias"] if "bias" in p else y


def layer_norm(x, p, eps):
    """LayerNorm over the last axis (float32); ``p`` None means no affine parameters."""
    x = x.astype(jnp.float32)
    mu = x.mean(-1, keepdims=True)
    var = jnp.square(x - mu).mean(-1, keepdims=True)
    y = (x - mu) * jax.lax.rsqrt(var + eps)
    return y if p is None else y * p["scale"] + p["bias"]


def conv1d(x, kernel, stride, cd, padding=(0, 0), groups=1):
    """1-D convolution, ``x`` [B, T, Cin], ``kernel`` [K, Cin / groups, Cout] -> [B, T', Cout]."""
    return jax.lax.conv_general_dilated(
        x.astype(cd), kernel.astype(cd), (stride,), [padding],
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups,
        precision=_precision(cd), preferred_element_type=jnp.float32)


def first_conv(x, kernel, stride, cd):
    """The first conv (one input channel) as frames @ kernel: ``x`` [B, S] -> [B, T, C]."""
    k = kernel.shape[0]
    n = (x.shape[1] - k) // stride + 1
    if k % stride == 0 and x.shape[1] >= (n + k // stride - 1) * stride:
        # frames from k / stride shifted views of the [B, S / stride, stride] reshaping
        m = n + k // stride - 1
        xs = x[:, :m * stride].reshape(x.shape[0], m, stride)
        frames = jnp.concatenate([xs[:, j:j + n] for j in range(k // stride)], axis=-1)
    else:
        idx = np.arange(n)[:, None] * stride + np.arange(k)[None, :]
        frames = x[:, idx]
    return jnp.matmul(frames.astype(cd), kernel[:, 0, :].astype(cd), precision=_precision(cd),
                      preferred_element_type=jnp.float32)


def conv_output_lengths(lengths, kernels, strides):
    """Valid frames after each conv (HF ``_get_feat_extract_output_lengths``), clipped at 0."""
    out = []
    for k, s in zip(kernels, strides):
        lengths = jnp.maximum((lengths - k) // s + 1, 0)
        out.append(lengths)
    return out


def receptive_field(kernels, strides) -> int:
    """Fewest samples that give one output frame."""
    n = 1
    for k, s in reversed(list(zip(kernels, strides))):
        n = (n - 1) * s + k
    return n


# ---- the forward pass ---------------------------------------------------------------------
def feature_encoder(params, cfg, waveforms, lengths):
    """Conv feature encoder: [B, S] -> ([B, T, C] float32, valid frames [B]).

    On CPU the utterances go through the conv stack one at a time (``lax.map``): the first
    conv's output is the largest activation of the model (512 channels at 1/5 of the sample
    rate), and one utterance at a time keeps the peak memory at a fraction of the batch's.
    """
    if jax.default_backend() == "cpu" and waveforms.shape[0] > 1:
        h, n = jax.lax.map(lambda a: feature_encoder_batch(params, cfg, a[0][None], a[1][None]),
                           (waveforms, lengths))
        return h[:, 0], n[:, 0]
    return feature_encoder_batch(params, cfg, waveforms, lengths)


def feature_encoder_batch(params, cfg, waveforms, lengths):
    """The conv stack on a batch [B, S] -> ([B, T, C] float32, valid frames [B])."""
    cd = compute_dtype(cfg)
    act = ACTIVATIONS[cfg.feat_extract_activation]
    lens = conv_output_lengths(lengths, cfg.conv_kernel, cfg.conv_stride)
    x = jnp.where(frame_mask(lengths, waveforms.shape[1]), waveforms, 0.0)
    h = None
    for i, (k, s) in enumerate(zip(cfg.conv_kernel, cfg.conv_stride)):
        p = params["conv_layers"][f"conv_{i}"]
        h = first_conv(x, p["kernel"], s, cd) if i == 0 else conv1d(h, p["kernel"], s, cd)
        if "bias" in p:
            h = h + p["bias"]
        if cfg.feat_extract_norm == "layer":
            h = layer_norm(h, p["norm"], 1e-5)
        elif i == 0:
            h = group_norm_valid(h, p["norm"], lens[0])
        h = act(h)
    return h, lens[-1]


def group_norm_valid(h, p, lengths, eps=1e-5):
    """GroupNorm with one group per channel over the valid frames only (torch ``GroupNorm``).

    The sums over time are matrix products with the frame mask (on CPU, XLA runs these ~20x
    faster than the equivalent masked column reductions).
    """
    hi = jax.lax.Precision.HIGHEST
    m = frame_mask(lengths, h.shape[1]).astype(jnp.float32)
    cnt = jnp.maximum(m.sum(1), 1.0)[:, None]
    mu = jnp.einsum("bt,btc->bc", m, h, precision=hi) / cnt
    d = h - mu[:, None]
    var = jnp.einsum("bt,btc->bc", m, d * d, precision=hi) / cnt
    return d * (jax.lax.rsqrt(var + eps) * p["scale"])[:, None] + p["bias"]


def _same_pad_conv(x, p, cfg, cd):
    """HF positional conv: padding K // 2 both sides, the last frame dropped for even K."""
    k = cfg.pos_conv_kernel
    y = conv1d(x, p["kernel"], 1, cd, padding=(k // 2, k - 1 - k // 2),
               groups=cfg.pos_conv_groups)
    return y + p["bias"]


def positional_conv(params, cfg, x, valid):
    """The positional embedding added to ``x`` [B, T, D]; ``valid`` [B, T, 1] float mask."""
    cd = compute_dtype(cfg)
    act = ACTIVATIONS[cfg.feat_extract_activation]
    p = params["pos_conv"]
    if cfg.pos_conv_depth > 1:                      # data2vec-audio stack
        h = x
        for i in range(cfg.pos_conv_depth):
            h = _same_pad_conv(h * valid, p[f"conv_{i}"], cfg, cd)
            h = act(layer_norm(h, None, 1e-5))
        return h
    if cfg.pos_conv_batch_norm:
        bn = p["batch_norm"]
        x = (x - bn["mean"]) * jax.lax.rsqrt(bn["var"] + 1e-5) * bn["scale"] + bn["bias"]
    return act(_same_pad_conv(x * valid, p["conv_0"], cfg, cd))


def attention_logits_mask(frames_valid):
    """[B, 1, 1, T] boolean: keys that may be attended to."""
    return frames_valid[:, None, None, :]


QUERY_BLOCK = 256   # CPU: queries per block of the blocked attention


def _blocked_attention(q, k, v, key_valid, cd):
    """Softmax attention one utterance and one block of queries at a time (exact: every block
    sees all keys). On CPU this keeps the [block, T] logits in cache: 2x faster than one
    [B, H, T, T] softmax for 30 s Whisper windows, and a fraction of its memory.
    ``q, k, v`` [B, T, H, hd] -> [B, T, H, hd]."""
    b, t, h, hd = q.shape
    nb = -(-t // QUERY_BLOCK)
    qp = jnp.pad(q, ((0, 0), (0, nb * QUERY_BLOCK - t), (0, 0), (0, 0)))
    qs = qp.reshape(b, nb, QUERY_BLOCK, h, hd).transpose(0, 1, 3, 2, 4)   # [B, nb, H, Q, hd]
    kt, vt = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)            # [B, H, hd, T], [B, H, T, hd]

    def utterance(a):
        qq, kk, vv, valid = a                            # [nb, H, Q, hd], [H, hd, T], [H, T, hd]

        def block(qi):
            logits = jnp.matmul(qi.astype(cd), kk.astype(cd), precision=_precision(cd),
                                preferred_element_type=jnp.float32)
            logits = jnp.where(valid[None, None, :], logits, jnp.finfo(jnp.float32).min)
            w = jax.nn.softmax(logits, axis=-1)
            return jnp.matmul(w.astype(cd), vv.astype(cd), precision=_precision(cd),
                              preferred_element_type=jnp.float32)
        return jax.lax.map(block, qq)

    o = jax.lax.map(utterance, (qs, kt, vt, key_valid))      # [B, nb, H, Q, hd]
    return o.transpose(0, 1, 3, 2, 4).reshape(b, nb * QUERY_BLOCK, h, hd)[:, :t]


def self_attention(p, cfg, x, key_valid, bias=None):
    """Multi-head self-attention; ``bias`` [B or 1, H, T, T] is added to the logits (WavLM).
    On CPU, long inputs without a bias take the blocked path (:func:`_blocked_attention`)."""
    cd = compute_dtype(cfg)
    b, t, d = x.shape
    h, hd = cfg.num_attention_heads, cfg.head_dim
    qkv = dense(x, p["qkv"], cd).reshape(b, t, 3, h, hd)
    if bias is None and t >= 2 * QUERY_BLOCK and jax.default_backend() == "cpu":
        o = _blocked_attention(qkv[:, :, 0] * (hd ** -0.5), qkv[:, :, 1], qkv[:, :, 2],
                               key_valid, cd)
        return dense(o.reshape(b, t, d), p["out"], cd)
    q = qkv[:, :, 0] * (hd ** -0.5)
    k, v = qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(cd), k.astype(cd),
                        precision=_precision(cd), preferred_element_type=jnp.float32)
    if bias is not None:
        logits = logits + bias
    logits = jnp.where(attention_logits_mask(key_valid), logits, jnp.finfo(jnp.float32).min)
    w = jax.nn.softmax(logits, axis=-1)
    o = jnp.einsum("bhqk,bkhd->bqhd", w.astype(cd), v.astype(cd),
                   precision=_precision(cd), preferred_element_type=jnp.float32)
    return dense(o.reshape(b, t, d), p["out"], cd)


def feed_forward(p, cfg, x):
    cd = compute_dtype(cfg)
    return dense(ACTIVATIONS[cfg.hidden_act](dense(x, p["ffn_in"], cd)), p["ffn_out"], cd)


def transformer_layer(p, cfg, x, key_valid, attend=None):
    """One encoder layer (post-LN or stable pre-LN). ``attend(p, x)`` overrides the attention."""
    eps = cfg.layer_norm_eps
    attend = attend or (lambda p_, y: self_attention(p_, cfg, y, key_valid))
    if cfg.do_stable_layer_norm:
        x = x + attend(p, layer_norm(x, p["attn_norm"], eps))
        return x + feed_forward(p, cfg, layer_norm(x, p["final_norm"], eps))
    x = layer_norm(x + attend(p, x), p["attn_norm"], eps)
    return layer_norm(x + feed_forward(p, cfg, x), p["final_norm"], eps)


def encoder_input(params, cfg, waveforms, lengths, masks):
    """Feature encoder, projection, positional conv: (cnn [B,T,C], layer_0 [B,T,D], frames [B],
    valid-frame mask [B, T])."""
    cd = compute_dtype(cfg)
    feats, n = feature_encoder(params, cfg, waveforms, lengths)
    feats = apply_layer_mask(feats, masks, "cnn")
    fp = params["feature_projection"]
    h = layer_norm(feats, fp["layer_norm"], cfg.layer_norm_eps) if cfg.feat_proj_layer_norm \
        else feats
    h = dense(h, fp["projection"], cd)
    valid = frame_mask(n, h.shape[1])
    vf = valid.astype(jnp.float32)[..., None]
    h = h * vf                                       # HF: padded frames output 0
    h = h + positional_conv(params, cfg, h, vf)
    if not cfg.do_stable_layer_norm:
        h = layer_norm(h, params["encoder_norm"], cfg.layer_norm_eps)
    h = apply_layer_mask(h, masks, "layer_0")
    return feats, h, n, valid


def forward(params, cfg, waveforms, lengths, masks=None):
    """All probed layers: ([cnn, layer_0, ..., layer_L], [valid frames] * (L + 2))."""
    feats, h, n, valid = encoder_input(params, cfg, waveforms, lengths, masks)
    outs = [feats, h]
    for i in range(cfg.num_hidden_layers):
        h = transformer_layer(params["layers"][f"layer_{i}"], cfg, h, valid)
        h = apply_layer_mask(h, masks, f"layer_{i + 1}")
        outs.append(h)
    return outs, [n] * len(outs)


# ---- random parameters --------------------------------------------------------------------
def numpy_rng(rng) -> np.random.Generator:
    """A numpy generator seeded by a JAX PRNG key (one small jitted call per array would make
    initialising a large model slow)."""
    data = np.asarray(jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
                      else rng).ravel()
    return np.random.default_rng([int(x) for x in data])


def _normal(rng, shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def _uniform(rng, shape, bound):
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _norm_params(d):
    return {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32)}


def _linear(rng, din, dout, std=0.02):
    return {"kernel": _normal(rng, (din, dout), std), "bias": np.zeros(dout, np.float32)}


def init_common(rng, cfg):
    """Random parameters (HF ``_init_weights`` style) for everything except attention extras."""
    gen = numpy_rng(rng)
    params = {"conv_layers": {}}
    cin = 1
    for i, (c, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        p = {"kernel": _normal(gen, (k, cin, c), math.sqrt(2.0 / (cin * k)))}
        if cfg.conv_bias:
            p["bias"] = _uniform(gen, (c,), math.sqrt(1.0 / (cin * k)))
        if cfg.feat_extract_norm == "layer" or i == 0:
            p["norm"] = _norm_params(c)
        params["conv_layers"][f"conv_{i}"] = p
        cin = c
    d, c = cfg.hidden_size, cfg.conv_dim[-1]
    fp = {"projection": {"kernel": _uniform(gen, (c, d), math.sqrt(1.0 / c)),
                         "bias": _uniform(gen, (d,), math.sqrt(1.0 / c))}}
    if cfg.feat_proj_layer_norm:
        fp["layer_norm"] = _norm_params(c)
    params["feature_projection"] = fp
    k, g = cfg.pos_conv_kernel, cfg.pos_conv_groups
    pos = {f"conv_{i}": {"kernel": _normal(gen, (k, d // g, d), 2 * math.sqrt(1.0 / (k * d))),
                         "bias": np.zeros(d, np.float32)}
           for i in range(max(cfg.pos_conv_depth, 1))}
    if cfg.pos_conv_batch_norm:
        pos["batch_norm"] = {"scale": np.ones(d, np.float32), "bias": np.zeros(d, np.float32),
                             "mean": np.zeros(d, np.float32), "var": np.ones(d, np.float32)}
    params["pos_conv"] = pos
    params["encoder_norm"] = _norm_params(d)
    layers = {}
    for i in range(cfg.num_hidden_layers):
        layers[f"layer_{i}"] = {
            "qkv": _linear(gen, d, 3 * d), "out": _linear(gen, d, d),
            "attn_norm": _norm_params(d), "final_norm": _norm_params(d),
            "ffn_in": _linear(gen, d, cfg.intermediate_size),
            "ffn_out": _linear(gen, cfg.intermediate_size, d)}
    params["layers"] = layers
    return params


class _Wav2Vec2Base(Encoder):
    """Shared Encoder behaviour of the wav2vec 2.0 family (``wav2vec2`` and ``wavlm``)."""

    @classmethod
    def config_from_dict(cls, d: dict):
        return Wav2Vec2Config(**d)

    @property
    def layer_names(self) -> list[str]:
        return ["cnn"] + [f"layer_{i}" for i in range(self.config.num_hidden_layers + 1)]

    def min_samples(self) -> int:
        return receptive_field(self.config.conv_kernel, self.config.conv_stride)


@register("wav2vec2", architecture="transformer")
class Wav2Vec2Encoder(_Wav2Vec2Base):
    """wav2vec 2.0 / XLS-R / HuBERT / data2vec-audio (``config.model_type`` says which)."""

    config_cls = Wav2Vec2Config

    def apply(self, params, waveforms, lengths, masks=None):
        return forward(params, self.config, waveforms, lengths, masks)

    def init_params(self, rng):
        return init_common(rng, self.config)
