"""x-vector TDNN and ECAPA-TDNN (SpeechBrain 1.1.2) in JAX: families ``xvector`` and ``ecapa``.

Ports of ``speechbrain.lobes.models.Xvector.Xvector`` and
``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`` in inference mode, behind SpeechBrain's
front end as ``EncoderClassifier.encode_batch`` runs it: ``Fbank`` -> ``InputNormalization``
(sentence mean) -> ``embedding_model`` (:mod:`speechinterp.encoders.fbank`). The returned
embedding is the ``embedding_model`` output; the ``mean_var_norm_emb`` of the published
checkpoints is only applied by ``encode_batch(normalize=True)`` and is not part of this port.

SpeechBrain's ``Conv1d`` pads ``"same"`` with ``padding_mode="reflect"`` (``d (k - 1) / 2``
frames on each side). Reflection happens at each utterance's own last valid frame: before
every conv with ``k > 1`` the batch is re-padded by one gather of per-utterance reflected
indices, then convolved VALID, so a padded batch gives exactly what each utterance gives alone
(valid frames never read padding frames; padding frames are zeroed in every output).
BatchNorm uses its running statistics (eval mode, eps 1e-5); dropout is off.

``xvector`` layers (frame level unless said):

* ``tdnn1`` .. ``tdnn5``: each TDNN block's output, Conv1d -> LeakyReLU (the published model
  and SpeechBrain's default; ``activation="relu"`` also supported) -> BatchNorm;
* ``pooling`` (T = 1): ``StatisticsPooling``: mean and unbiased std (+ 1e-5) over valid
  frames, concatenated [2 C]. SpeechBrain also adds random noise in [1e-5, 9e-5] to the mean
  on every call (``_get_gauss_noise``, even in eval); this port leaves it out (deterministic);
* ``embedding`` (T = 1): the final ``Linear`` (the x-vector).

``ecapa`` layers:

* ``block0``: the first TDNN block (Conv1d -> ReLU -> BatchNorm);
* ``block1`` .. ``block3`` (one per SE-Res2Net block): TDNN (k 1) -> Res2Net (``scale``
  chunks, chunk i > 0 through its own dilated TDNN block after adding chunk i-1's output) ->
  TDNN (k 1) -> squeeze-excitation (mean over valid frames) -> + residual (1x1 shortcut conv
  when the widths differ);
* ``mfa``: the multi-layer feature aggregation TDNN block over ``block1..blockN`` concatenated;
* ``pooling`` (T = 1): attentive statistics pooling (global context: the utterance's mean and
  std over valid frames appended to each frame; attention softmax over valid frames only),
  [2 C], before ``asp_bn``;
* ``embedding`` (T = 1): ``asp_bn`` (BatchNorm) then the 1x1 ``fc`` conv (the speaker embedding).

A mask for a layer acts on that layer's output inside the forward pass, before any later layer
reads it (for ECAPA, ``block1..3`` masks also reach the MFA concatenation and the next block's
residual).

Parameter tree (kernels in ``[k, C_in / groups, C_out]``, BatchNorm as ``scale``, ``bias``,
``mean``, ``var``): see :mod:`speechinterp.convert.speechbrain_tdnn` for the mapping from
SpeechBrain's state dict keys.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders import fbank as fb
from speechinterp.encoders.base import Encoder, apply_layer_mask, register

HI = jax.lax.Precision.HIGHEST
BN_EPS = 1e-5
ACTIVATIONS = {"relu": jax.nn.relu,
               "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01)}   # torch default slope


# ---------------------------------------------------------------------------------------
# front-end settings shared by both families
@dataclasses.dataclass
class FrontEndFields:
    """SpeechBrain ``Fbank`` + ``InputNormalization(norm_type="sentence")`` settings."""

    n_mels: int = 40
    sample_rate: int = 16000
    n_fft: int = 400
    win_length: float = 25
    hop_length: float = 10
    f_min: float = 0
    f_max: float | None = None
    std_norm: bool = False

    def front_end(self, waveforms, lengths):
        feats, n = fb.fbank(waveforms, lengths, sample_rate=self.sample_rate, n_fft=self.n_fft,
                            n_mels=self.n_mels, win_length=self.win_length,
                            hop_length=self.hop_length, f_min=self.f_min, f_max=self.f_max)
        return fb.sentence_norm(feats, n, std_norm=self.std_norm), n

    @property
    def hop_samples(self) -> int:
        return fb.samples(self.hop_length, self.sample_rate)


def _tuple(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass
class XvectorConfig(FrontEndFields):
    """``Xvector`` arguments; defaults are ``spkrec-xvect-voxceleb`` (24 mels, LeakyReLU)."""

    n_mels: int = 24
    tdnn_blocks: int = 5
    tdnn_channels: Sequence[int] = (512, 512, 512, 512, 1500)
    tdnn_kernel_sizes: Sequence[int] = (5, 3, 3, 1, 1)
    tdnn_dilations: Sequence[int] = (1, 2, 3, 1, 1)
    lin_neurons: int = 512
    activation: str = "leaky_relu"

    def __post_init__(self):
        for f in ("tdnn_channels", "tdnn_kernel_sizes", "tdnn_dilations"):
            setattr(self, f, tuple(int(v) for v in getattr(self, f)))
            if len(getattr(self, f)) < self.tdnn_blocks:
                raise ValueError(f"{f} has fewer than tdnn_blocks={self.tdnn_blocks} entries")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")
        _check_kernels(self.tdnn_kernel_sizes[:self.tdnn_blocks])


@dataclasses.dataclass
class ECAPAConfig(FrontEndFields):
    """``ECAPA_TDNN`` arguments; defaults are ``spkrec-ecapa-voxceleb`` (80 mels, C = 1024)."""

    n_mels: int = 80
    channels: Sequence[int] = (1024, 1024, 1024, 1024, 3072)
    kernel_sizes: Sequence[int] = (5, 3, 3, 3, 1)
    dilations: Sequence[int] = (1, 2, 3, 4, 1)
    attention_channels: int = 128
    res2net_scale: int = 8
    se_channels: int = 128
    global_context: bool = True
    groups: Sequence[int] = (1, 1, 1, 1, 1)
    lin_neurons: int = 192
    activation: str = "relu"

    def __post_init__(self):
        for f in ("channels", "kernel_sizes", "dilations", "groups"):
            setattr(self, f, tuple(int(v) for v in getattr(self, f)))
        n = len(self.channels)
        if not (len(self.kernel_sizes) == len(self.dilations) == len(self.groups) == n) or n < 3:
            raise ValueError("channels, kernel_sizes, dilations, groups must have one entry "
                             "per block (at least 3)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}; known: {sorted(ACTIVATIONS)}")
        for c in self.channels[1:-1]:
            if c % self.res2net_scale:
                raise ValueError(f"channels {c} not divisible by res2net_scale "
                                 f"{self.res2net_scale}")
        _check_kernels(self.kernel_sizes)

    @property
    def num_se_blocks(self) -> int:
        return len(self.channels) - 2


def _check_kernels(kernels):
    for k in kernels:
        if k % 2 == 0:
            raise ValueError(f"SpeechBrain's 'same' padding needs odd kernels, got {k}")


# ---------------------------------------------------------------------------------------
# building blocks (x: [B, T, C] channels last, n: [B] valid frames)
def _reflect_pad(x, n, pad: int):
    """[B, T + 2 pad, C]: frame ``j`` holds frame ``j - pad`` reflected at 0 and at ``n - 1``.

    ``F.pad(mode="reflect")`` applied at each utterance's own length (one gather); frames past
    ``n + pad`` (padding of the batch) hold clipped copies that no valid output reads.
    """
    b, t, _ = x.shape
    j = jnp.abs(jnp.arange(t + 2 * pad)[None, :] - pad)
    last = (n - 1)[:, None]
    j = jnp.clip(jnp.where(j > last, 2 * last - j, j), 0, last)
    return x[jnp.arange(b)[:, None], j]


def conv1d(p, x, n, dilation: int = 1, groups: int = 1):
    """SpeechBrain ``Conv1d`` (stride 1, padding "same", reflect) with per-utterance reflection."""
    w = p["kernel"]                                            # [k, C_in / G, O]
    k = w.shape[0]
    if k == 1 and groups == 1:
        return jnp.dot(x, w[0], precision=HI) + p["bias"]
    if k > 1:
        x = _reflect_pad(x, n, dilation * (k - 1) // 2)
    y = jax.lax.conv_general_dilated(x, w, (1,), "VALID", rhs_dilation=(dilation,),
                                     dimension_numbers=("NWC", "WIO", "NWC"),
                                     feature_group_count=groups, precision=HI)
    return y + p["bias"]


def batch_norm(p, x):
    """``torch.nn.BatchNorm1d`` in eval mode over the last axis."""
    inv = jax.lax.rsqrt(p["var"] + BN_EPS) * p["scale"]
    return (x - p["mean"]) * inv + p["bias"]


def tdnn_block(p, x, n, dilation=1, groups=1, act=jax.nn.relu):
    """Conv1d -> activation -> BatchNorm (``TDNNBlock`` / one x-vector TDNN layer)."""
    return batch_norm(p["bn"], act(conv1d(p["conv"], x, n, dilation, groups)))


def _valid(n, t_len: int, dtype=jnp.float32):
    return (jnp.arange(t_len)[None, :] < n[:, None]).astype(dtype)[..., None]   # [B, T, 1]


def _zero_pad(x, n):
    return jnp.where(jnp.arange(x.shape[1])[None, :, None] < n[:, None, None], x, 0.0)


def _masked_mean_std(x, w, eps):
    """``_compute_statistics``: weighted mean and sqrt(clamp(weighted var, eps)) over time."""
    mean = (w * x).sum(1)
    var = (w * jnp.square(x - mean[:, None, :])).sum(1)
    return mean, jnp.sqrt(jnp.maximum(var, eps))


# ---------------------------------------------------------------------------------------
def _conv_init(key, k, c_in, c_out, groups=1):
    """PyTorch Conv1d default: kaiming-uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)), bias alike."""
    fan_in = c_in // groups * k
    bound = 1.0 / np.sqrt(fan_in)
    k1, k2 = jax.random.split(key)
    return {"kernel": jax.random.uniform(k1, (k, c_in // groups, c_out), minval=-bound,
                                         maxval=bound),
            "bias": jax.random.uniform(k2, (c_out,), minval=-bound, maxval=bound)}


def _bn_init(c):
    return {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,)), "mean": jnp.zeros((c,)),
            "var": jnp.ones((c,))}


class _TDNNBase(Encoder):
    def min_samples(self) -> int:
        """Reflect padding needs more valid frames than the widest one-sided pad."""
        c = self.config
        return max(400, self._max_pad() * c.hop_samples)

    def apply(self, params, waveforms, lengths, masks=None):
        waveforms = jnp.asarray(waveforms, jnp.float32)
        lengths = jnp.asarray(lengths, jnp.int32)
        feats, n = self.config.front_end(waveforms, lengths)
        return self.apply_features(params, feats, n, masks)


@register("xvector", architecture="tdnn")
@dataclasses.dataclass
class XvectorEncoder(_TDNNBase):
    """SpeechBrain ``Xvector`` behind ``Fbank`` + sentence mean normalisation."""

    config_cls = XvectorConfig

    @property
    def layer_names(self) -> list[str]:
        return [f"tdnn{i + 1}" for i in range(self.config.tdnn_blocks)] + ["pooling",
                                                                            "embedding"]

    def _max_pad(self):
        c = self.config
        return max(d * (k - 1) // 2 for k, d in zip(c.tdnn_kernel_sizes[:c.tdnn_blocks],
                                                    c.tdnn_dilations))

    def apply_features(self, params, feats, n, masks=None):
        """Every layer from normalised features [B, T, n_mels] with ``n`` [B] valid frames."""
        c = self.config
        act = ACTIVATIONS[c.activation]
        h = feats
        outs, lens = [], []
        for i in range(c.tdnn_blocks):
            name = f"tdnn{i + 1}"
            h = tdnn_block(params[name], h, n, c.tdnn_dilations[i], 1, act)
            h = _zero_pad(apply_layer_mask(h, masks, name), n)
            outs.append(h)
            lens.append(n)
        m = _valid(n, h.shape[1], h.dtype)
        cnt = m.sum(1)
        mean = (h * m).sum(1) / cnt
        std = jnp.sqrt((jnp.square(h - mean[:, None]) * m).sum(1) / (cnt - 1)) + 1e-5
        pooled = apply_layer_mask(jnp.concatenate([mean, std], -1), masks, "pooling")
        emb = jnp.dot(pooled, params["embedding"]["kernel"], precision=HI)
        emb = apply_layer_mask(emb + params["embedding"]["bias"], masks, "embedding")
        one = jnp.ones_like(n)
        return outs + [pooled[:, None], emb[:, None]], lens + [one, one]

    def init_params(self, rng):
        c = self.config
        keys = jax.random.split(rng, c.tdnn_blocks + 1)
        params, c_in = {}, c.n_mels
        for i in range(c.tdnn_blocks):
            co = c.tdnn_channels[i]
            params[f"tdnn{i + 1}"] = {"conv": _conv_init(keys[i], c.tdnn_kernel_sizes[i], c_in,
                                                         co), "bn": _bn_init(co)}
            c_in = co
        lin = _conv_init(keys[-1], 1, 2 * c_in, c.lin_neurons)
        params["embedding"] = {"kernel": lin["kernel"][0], "bias": lin["bias"]}
        return jax.tree.map(np.asarray, params)


@register("ecapa", architecture="tdnn")
@dataclasses.dataclass
class ECAPAEncoder(_TDNNBase):
    """SpeechBrain ``ECAPA_TDNN`` behind ``Fbank`` + sentence mean normalisation."""

    config_cls = ECAPAConfig

    @property
    def layer_names(self) -> list[str]:
        n_se = self.config.num_se_blocks
        return (["block0"] + [f"block{i}" for i in range(1, n_se + 1)]
                + ["mfa", "pooling", "embedding"])

    def _max_pad(self):
        c = self.config
        return max(d * (k - 1) // 2 for k, d in zip(c.kernel_sizes, c.dilations))

    def _se_res2net(self, p, x, n, i):
        c = self.config
        act = ACTIVATIONS[c.activation]
        residual = conv1d(p["shortcut"], x, n) if "shortcut" in p else x
        h = tdnn_block(p["tdnn1"], x, n, 1, c.groups[i], act)
        chunks = jnp.split(h, c.res2net_scale, axis=-1)
        ys = [chunks[0]]
        for j in range(1, c.res2net_scale):
            inp = chunks[j] if j == 1 else chunks[j] + ys[-1]
            # Res2NetBlock builds its TDNN blocks with the default ReLU
            ys.append(tdnn_block(p["res2net"][f"r{j - 1}"], inp, n, c.dilations[i]))
        h = jnp.concatenate(ys, -1)
        h = tdnn_block(p["tdnn2"], h, n, 1, c.groups[i], act)
        m = _valid(n, h.shape[1], h.dtype)
        s = (h * m).sum(1, keepdims=True) / m.sum(1, keepdims=True)
        s = jax.nn.relu(conv1d(p["se"]["conv1"], s, n))
        s = jax.nn.sigmoid(conv1d(p["se"]["conv2"], s, n))
        return s * h + residual

    def apply_features(self, params, feats, n, masks=None):
        """Every layer from normalised features [B, T, n_mels] with ``n`` [B] valid frames."""
        c = self.config
        act = ACTIVATIONS[c.activation]
        outs, lens = [], []
        h = tdnn_block(params["block0"], feats, n, c.dilations[0], c.groups[0], act)
        h = _zero_pad(apply_layer_mask(h, masks, "block0"), n)
        outs.append(h)
        xl = []
        for i in range(1, c.num_se_blocks + 1):
            name = f"block{i}"
            h = self._se_res2net(params[name], h, n, i)
            h = _zero_pad(apply_layer_mask(h, masks, name), n)
            outs.append(h)
            xl.append(h)
        h = tdnn_block(params["mfa"], jnp.concatenate(xl, -1), n, c.dilations[-1],
                       c.groups[-1], act)
        h = _zero_pad(apply_layer_mask(h, masks, "mfa"), n)
        outs.append(h)
        lens += [n] * len(outs)

        # attentive statistics pooling
        m = _valid(n, h.shape[1], h.dtype)
        eps = 1e-12
        if c.global_context:
            mean, std = _masked_mean_std(h, m / m.sum(1, keepdims=True), eps)
            attn = jnp.concatenate([h, jnp.broadcast_to(mean[:, None], h.shape),
                                    jnp.broadcast_to(std[:, None], h.shape)], -1)
        else:
            attn = h
        attn = tdnn_block(params["asp"]["tdnn"], attn, n)
        attn = conv1d(params["asp"]["conv"], jnp.tanh(attn), n)
        attn = jnp.where(m > 0, attn, -jnp.inf)
        attn = jax.nn.softmax(attn, axis=1)
        mean, std = _masked_mean_std(h, attn, eps)
        pooled = apply_layer_mask(jnp.concatenate([mean, std], -1), masks, "pooling")
        emb = batch_norm(params["asp_bn"], pooled)
        emb = jnp.dot(emb, params["fc"]["kernel"][0], precision=HI) + params["fc"]["bias"]
        emb = apply_layer_mask(emb, masks, "embedding")
        one = jnp.ones_like(n)
        return outs + [pooled[:, None], emb[:, None]], lens + [one, one]

    def init_params(self, rng):
        c = self.config
        keys = iter(jax.random.split(rng, 64 + 8 * c.num_se_blocks * c.res2net_scale))
        ch, ks, gs = c.channels, c.kernel_sizes, c.groups

        def block(k, c_in, c_out, g=1):
            return {"conv": _conv_init(next(keys), k, c_in, c_out, g), "bn": _bn_init(c_out)}

        params = {"block0": block(ks[0], c.n_mels, ch[0], gs[0])}
        for i in range(1, c.num_se_blocks + 1):
            cin, cout = ch[i - 1], ch[i]
            sub = cout // c.res2net_scale
            p = {"tdnn1": block(1, cin, cout, gs[i]),
                 "res2net": {f"r{j}": block(ks[i], sub, sub)
                             for j in range(c.res2net_scale - 1)},
                 "tdnn2": block(1, cout, cout, gs[i]),
                 "se": {"conv1": _conv_init(next(keys), 1, cout, c.se_channels),
                        "conv2": _conv_init(next(keys), 1, c.se_channels, cout)}}
            if cin != cout:
                p["shortcut"] = _conv_init(next(keys), 1, cin, cout)
            params[f"block{i}"] = p
        params["mfa"] = block(ks[-1], ch[-2] * c.num_se_blocks, ch[-1], gs[-1])
        c_att_in = ch[-1] * 3 if c.global_context else ch[-1]
        params["asp"] = {"tdnn": block(1, c_att_in, c.attention_channels),
                         "conv": _conv_init(next(keys), 1, c.attention_channels, ch[-1])}
        params["asp_bn"] = _bn_init(ch[-1] * 2)
        params["fc"] = _conv_init(next(keys), 1, ch[-1] * 2, c.lin_neurons)
        return jax.tree.map(np.asarray, params)
