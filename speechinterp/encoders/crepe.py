"""CREPE pitch CNN (torchcrepe 0.0.24, ``torchcrepe/model.py`` ``Crepe``) in JAX.

Framing (``torchcrepe.preprocess`` with ``pad=True``, 16 kHz, hop 160): the utterance is
zero-padded by 512 samples on both sides and cut into ``1 + n // 160`` frames of 1024 samples;
each frame is mean-centred and divided by ``max(1e-10, std)`` (unbiased std, as torch). The
frames of an utterance are its time axis (10 ms per frame).

Per frame: conv1 (kernel 512, stride 4, padding 254/254), conv2..conv6 (kernel 64, padding
31/32); each conv -> ReLU -> BatchNorm (inference statistics, eps 1e-3) -> max-pool 2 along the
frame's sample axis. Layer ``convk`` is that block's pooled output, a [L_k, C_k] map per frame
(L = 128, 64, 32, 16, 8, 4). ``config.within_frame`` says how it becomes the frame's vector:

* ``"mean"`` (default): the mean over the L_k positions, one neuron per filter (D = C_k);
  a mask [C_k] multiplies the whole map of each filter inside the forward pass;
* ``"flatten"``: the whole map, position-major (the order torchcrepe's classifier reads conv6
  in), D = L_k C_k; a mask [L_k C_k] acts element-wise.

``classifier``: Linear(L_6 C_6 -> 360) followed by the sigmoid, i.e. torchcrepe's output
probabilities (post-sigmoid).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders.base import Encoder, apply_layer_mask, register

HI = jax.lax.Precision.HIGHEST
WINDOW = 1024
PITCH_BINS = 360
BN_EPS = 0.0010000000474974513

CAPACITY = {"tiny": (128, 16, 16, 16, 32, 64), "full": (1024, 128, 128, 128, 256, 512)}


@dataclasses.dataclass
class CrepeConfig:
    model: str = "full"
    hop_length: int = 160
    within_frame: str = "mean"        # "mean" or "flatten"
    sample_rate: int = 16000
    frame_chunk: int = 128            # frames per sequential chunk (memory bound; 0: all at once)

    def __post_init__(self):
        if self.model not in CAPACITY:
            raise ValueError(f"unknown CREPE capacity {self.model!r}; known: {sorted(CAPACITY)}")
        if self.within_frame not in ("mean", "flatten"):
            raise ValueError(f"within_frame must be 'mean' or 'flatten', not {self.within_frame!r}")

    @property
    def channels(self) -> tuple:
        return CAPACITY[self.model]


LENGTHS = (128, 64, 32, 16, 8, 4)      # per-frame positions after each block's pooling


def _chunked(fn, x, chunk: int):
    """``fn`` on x [N, ...] in sequential chunks of ``chunk`` rows (``lax.map``), outputs
    concatenated: the same values as ``fn(x)`` with bounded intermediate memory."""
    n = x.shape[0]
    if chunk <= 0 or n <= chunk:
        return fn(x)
    n_chunks = -(-n // chunk)
    x = jnp.pad(x, ((0, n_chunks * chunk - n),) + ((0, 0),) * (x.ndim - 1))
    outs = jax.lax.map(fn, x.reshape((n_chunks, chunk) + x.shape[1:]))
    return [o.reshape((n_chunks * chunk,) + o.shape[2:])[:n] for o in outs]


def frames(waveforms, lengths, hop: int):
    """Normalised frames [B, 1 + S // hop, 1024] and valid counts [B] (``torchcrepe.preprocess``)."""
    b, s = waveforms.shape
    n_frames = 1 + s // hop
    valid = jnp.arange(s)[None, :] < lengths[:, None]
    x = jnp.where(valid, waveforms, 0.0)
    x = jnp.pad(x, ((0, 0), (WINDOW // 2, WINDOW // 2)))
    idx = jnp.arange(n_frames)[:, None] * hop + jnp.arange(WINDOW)[None, :]
    fr = x[:, idx]
    fr = fr - fr.mean(-1, keepdims=True)
    std = jnp.sqrt(jnp.sum(fr * fr, -1, keepdims=True) / (WINDOW - 1))
    fr = fr / jnp.maximum(1e-10, std)
    return fr, 1 + lengths // hop


def _dense_kernel(kernel, length: int, pad_left: int):
    """A stride-1 conv on ``length`` positions as one matrix [length C_in, length C_out].

    Entry (q, i; p, o) is ``kernel[q - p + pad_left, i, o]`` (zero outside the kernel), so
    ``x.reshape(n, -1) @ dense`` is the zero-padded convolution. Used where the map is shorter
    than the kernel (conv4..conv6: 32, 16, 8 positions, kernel 64), which XLA's CPU
    convolution runs about 50x slower than this matrix product.
    """
    k, cin, cout = kernel.shape
    tap = jnp.arange(length)[:, None] - jnp.arange(length)[None, :] + pad_left     # [q, p]
    inside = (tap >= 0) & (tap < k)
    dense = jnp.where(inside[:, :, None, None], kernel[jnp.clip(tap, 0, k - 1)], 0.0)
    return dense.transpose(0, 2, 1, 3).reshape(length * cin, length * cout)


def _conv(p, x, stride: int, pad: tuple):
    """conv1d of x [N, L, C_in] with torchcrepe's zero padding, bias added."""
    n, length, _ = x.shape
    if "dense" in p:
        y = jnp.dot(x.reshape(n, -1), p["dense"], precision=HI).reshape(n, length, -1)
    else:
        y = jax.lax.conv_general_dilated(jnp.pad(x, ((0, 0), pad, (0, 0))), p["kernel"],
                                         (stride,), "VALID",
                                         dimension_numbers=("NWC", "WIO", "NWC"), precision=HI)
    return y + p["bias"]


def _block(p, x, stride: int, pad: tuple):
    """conv -> ReLU -> BatchNorm (inference) -> max-pool 2; x [N, L, C]."""
    y = jax.nn.relu(_conv(p, x, stride, pad))
    y = y * p["bn_scale"] + p["bn_shift"]
    n, l, c = y.shape
    return y.reshape(n, l // 2, 2, c).max(axis=2)


def _block_args(i: int):
    """(stride, padding) of block ``i`` (0-based), as torchcrepe's ``Crepe.layer`` calls."""
    return (4, (254, 254)) if i == 0 else (1, (31, 32))


def _inference_params(params):
    """Per-apply constants: BN as one scale and shift (it follows the ReLU in torchcrepe, so it
    cannot fold into the conv weights); dense matrices for maps shorter than the kernel."""
    out = {}
    for i in range(6):
        p = params[f"conv{i + 1}"]
        scale = p["scale"] / jnp.sqrt(p["var"] + BN_EPS)
        q = {"bias": p["bias"], "bn_scale": scale, "bn_shift": p["beta"] - p["mean"] * scale}
        k = p["kernel"].shape[0]
        length = WINDOW if i == 0 else LENGTHS[i - 1]             # positions into the conv
        stride, pad = _block_args(i)
        if stride == 1 and length < k:
            q["dense"] = _dense_kernel(p["kernel"], length, pad[0])
        else:
            q["kernel"] = p["kernel"]
        out[f"conv{i + 1}"] = q
    out["classifier"] = params["classifier"]
    return out


@register("crepe", architecture="cnn")
@dataclasses.dataclass
class CrepeEncoder(Encoder):
    """torchcrepe's ``Crepe`` (tiny / full) on 10 ms frames of an utterance."""

    config_cls = CrepeConfig

    @property
    def layer_names(self) -> list[str]:
        return [f"conv{i}" for i in range(1, 7)] + ["classifier"]

    def apply(self, params, waveforms, lengths, masks=None):
        c = self.config
        waveforms = jnp.asarray(waveforms, jnp.float32)
        lengths = jnp.asarray(lengths, jnp.int32)
        fr, n_valid = frames(waveforms, lengths, c.hop_length)
        b, t, _ = fr.shape
        ip = _inference_params(params)
        outs = _chunked(lambda x: self._frame_layers(ip, x, masks), fr.reshape(b * t, WINDOW),
                        c.frame_chunk)
        return [o.reshape(b, t, -1) for o in outs], [n_valid] * 7

    def _frame_layers(self, ip, fr, masks):
        """Every layer's per-frame vector for normalised frames [N, 1024]."""
        h = fr[:, :, None]
        outs = []
        for i in range(6):
            name = f"conv{i + 1}"
            h = _block(ip[name], h, *_block_args(i))
            n, l, ch = h.shape
            if self.config.within_frame == "mean":
                h = apply_layer_mask(h, masks, name)
                outs.append(h.mean(1))
            else:
                h = apply_layer_mask(h.reshape(n, l * ch), masks, name).reshape(n, l, ch)
                outs.append(h.reshape(n, l * ch))
        logits = jnp.dot(h.reshape(n, -1), ip["classifier"]["kernel"], precision=HI)
        probs = jax.nn.sigmoid(logits + ip["classifier"]["bias"])
        outs.append(apply_layer_mask(probs, masks, "classifier"))
        return outs

    def init_params(self, rng):
        """PyTorch-style uniform fan-in init; BN statistics at identity (mean 0, var 1)."""
        c = self.config
        keys = jax.random.split(rng, 14)
        params, cin = {}, 1
        for i, cout in enumerate(c.channels):
            k = 512 if i == 0 else 64
            bound = 1.0 / np.sqrt(cin * k)
            params[f"conv{i + 1}"] = {
                "kernel": jax.random.uniform(keys[2 * i], (k, cin, cout), minval=-bound,
                                             maxval=bound),
                "bias": jax.random.uniform(keys[2 * i + 1], (cout,), minval=-bound,
                                           maxval=bound),
                "scale": jnp.ones((cout,)), "beta": jnp.zeros((cout,)),
                "mean": jnp.zeros((cout,)), "var": jnp.ones((cout,)),
            }
            cin = cout
        d = LENGTHS[-1] * cin
        bound = 1.0 / np.sqrt(d)
        params["classifier"] = {
            "kernel": jax.random.uniform(keys[12], (d, PITCH_BINS), minval=-bound, maxval=bound),
            "bias": jax.random.uniform(keys[13], (PITCH_BINS,), minval=-bound, maxval=bound)}
        return jax.tree.map(lambda a: np.asarray(a, np.float32), params)

    def min_samples(self) -> int:
        return 1
