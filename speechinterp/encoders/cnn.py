"""The dialect / speaker-ID end-to-end CNN of Shon et al. (docs/method.md, "Encoders").

Reference: S. Shon, A. Ali, J. Glass, "Convolutional Neural Networks and Language Embeddings for
End-to-End Dialect Recognition", Odyssey 2018; public TensorFlow code github.com/swshon/dialectID_e2e
(``models/e2e_model.py``, ``scripts/prepare_data.py``). Architecture:

* front end: 40-d log-mel (``np.log(librosa.feature.melspectrogram(n_fft=400, hop_length=160,
  n_mels=40, fmin=133, fmax=6955))``, the released model's ``logmel_fft400_hop160``) or MFCC
  (``librosa.feature.mfcc(n_mfcc=40, ...)``: 128 mel bands, ``power_to_db`` with top_db 80,
  orthonormal DCT-II), computed here in jnp. The released model's preprocessing is available as
  options: librosa 0.5's reflect padding (``pad_mode='reflect'``), the energy VAD (``vad=True``)
  and the 300-frame sliding CMVN (``normalize='sliding_meanvar'``); utterance-level CMN / CMVN too.
* four 1-D convolutions over time, kernels 5/7/1/1, strides 1/2/1/1, TF ``'SAME'`` padding, bias,
  optional inference-mode batch norm (``bn1..bn4``, eps 1e-3, as ``batch_norm_wrapper_1dcnn``), ReLU;
  valid lengths ``L // stride`` as in the original ``shape_list / stride``;
* global mean pooling over valid frames (MGB-3) or mean + standard deviation pooling (ADI17);
* FC 1500 -> ReLU (``fc1``), FC 600 -> ReLU (``fc2``), linear classifier (``fc3`` in TF).

Padding never leaks: every layer's padded frames are zeroed and pooling uses valid frames only, so
a padded batch equals single runs. The time axis of the features is padded to a multiple of the
total stride; a strided conv reproduces TF's ``'SAME'`` padding of each utterance's own valid
length (:func:`_align_same`), so a single unpadded utterance matches the TF model exactly.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from speechinterp.encoders.base import Encoder, apply_layer_mask, frame_mask, register

HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass
class CNNConfig:
    """Architecture and front end of the dialect / speaker CNN (defaults: the MGB-3 model)."""

    filters: tuple = (500, 500, 500, 3000)
    kernels: tuple = (5, 7, 1, 1)
    strides: tuple = (1, 2, 1, 1)
    pooling: str = "mean"            # "mean" (MGB-3) or "stats" (mean + std, ADI17)
    fc_dims: tuple = (1500, 600)
    n_classes: int = 5
    batch_norm: bool = False         # inference-mode batch norm after every conv / FC (TF bn1..bn6)
    bn_eps: float = 1e-3
    stats_eps: float = 1e-5          # std = sqrt(var + stats_eps) in statistics pooling
    features: str = "logmel"         # "logmel" or "mfcc"
    n_features: int = 40
    n_mels: Optional[int] = None     # mel bands; default n_features (logmel) or 128 (mfcc, librosa)
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    fmin: float = 133.0
    fmax: float = 6955.0
    log_floor: float = 1e-10         # log-mel = log(max(mel, log_floor))
    top_db: Optional[float] = 80.0   # MFCC only, as librosa.power_to_db
    normalize: str = "none"          # none / mean / meanvar (utterance) / sliding_mean / sliding_meanvar
    cmvn_window: int = 300           # frames, for the sliding CMN / CMVN of Shon et al.
    pad_mode: str = "constant"       # STFT centre padding: "constant" (librosa>=0.10) or "reflect"
    vad: bool = False                # Shon et al.'s energy VAD (drop frames below mean RMS/2*1.04)
    sample_rate: int = 16000
    classes: tuple = ()              # class labels, when known

    def __post_init__(self):
        for f in ("filters", "kernels", "strides", "fc_dims", "classes"):
            setattr(self, f, tuple(getattr(self, f)))
        if self.pooling not in ("mean", "stats"):
            raise ValueError(f"pooling must be 'mean' or 'stats', not {self.pooling!r}")
        if self.features not in ("logmel", "mfcc"):
            raise ValueError(f"features must be 'logmel' or 'mfcc', not {self.features!r}")
        if self.normalize not in ("none", "mean", "meanvar", "sliding_mean", "sliding_meanvar"):
            raise ValueError(f"normalize must be none/mean/meanvar/sliding_mean/sliding_meanvar, "
                             f"not {self.normalize!r}")
        if self.pad_mode not in ("constant", "reflect"):
            raise ValueError(f"pad_mode must be 'constant' or 'reflect', not {self.pad_mode!r}")
        if not (len(self.filters) == len(self.kernels) == len(self.strides)):
            raise ValueError("filters, kernels and strides must have the same length")

    @property
    def mel_bands(self) -> int:
        if self.n_mels:
            return self.n_mels
        return self.n_features if self.features == "logmel" else 128


PRESETS = {
    # Shon et al. 2018, MGB-3 ADI-5 (the released TF model): 500-500-500-3000, mean pooling.
    "mgb3": dict(filters=(500, 500, 500, 3000), pooling="mean", n_classes=5),
    # ADI17 version: 1000-1000-1000-1500 with mean + std statistics pooling.
    "adi17": dict(filters=(1000, 1000, 1000, 1500), pooling="stats", n_classes=17),
    # A small model for tests and quick from-scratch training.
    "tiny": dict(filters=(32, 32, 32, 64), fc_dims=(64, 32), pooling="stats", n_classes=2),
}


def preset_config(name: str, **overrides) -> CNNConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown CNN preset {name!r}; known: {sorted(PRESETS)}")
    return CNNConfig(**{**PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------------------
# Front end (jnp), checked against librosa in tests/test_cnn.py
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _frontend_constants(cfg_key):
    import librosa
    import scipy.fft
    import scipy.signal

    sr, n_fft, win_length, n_mels, fmin, fmax, n_feat = cfg_key
    win = scipy.signal.get_window("hann", win_length, fftbins=True)
    lpad = (n_fft - win_length) // 2
    window = np.zeros(n_fft)
    window[lpad:lpad + win_length] = win
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_feat]  # [n_feat, n_mels]
    return (window.astype(np.float32), mel.T.astype(np.float32), dct.T.astype(np.float32))


def num_frames(num_samples, hop_length: int):
    """Frames of a centred STFT (librosa ``center=True``): ``1 + S // hop``."""
    return 1 + num_samples // hop_length


def _padded_signal(waveforms, lengths, half: int, pad_mode: str):
    """Centre padding of librosa's STFT, per utterance: zeros, or reflection about its own ends."""
    b, s = waveforms.shape
    x = jnp.where(jnp.arange(s)[None, :] < lengths[:, None], waveforms, 0.0)
    if pad_mode == "constant":
        return jnp.pad(x, ((0, 0), (half, half)))
    i = jnp.arange(-half, s + half)[None, :]
    last = jnp.maximum(lengths[:, None] - 1, 0)
    i = jnp.abs(i)
    i = jnp.where(i > last, 2 * last - i, i)
    i = jnp.clip(i, 0, s - 1)
    return jnp.take_along_axis(x, jnp.broadcast_to(i, (b, i.shape[1])), axis=1)


def _energy_vad(frames_raw, valid):
    """Shon et al.'s VAD: keep frames whose RMS exceeds ``mean(RMS) / 2 * 1.04`` (all if none)."""
    rms = jnp.sqrt(jnp.mean(frames_raw ** 2, axis=-1))  # librosa.feature.rms(center=True)
    n = jnp.maximum(valid.sum(1, keepdims=True), 1)
    thr = jnp.where(valid, rms, 0.0).sum(1, keepdims=True) / n / 2 * 1.04
    keep = valid & (rms > thr)
    return jnp.where(keep.any(1, keepdims=True), keep, valid)


def _sliding_cmvn(feats, length, window: int, variance: bool):
    """``cmvn_slide`` of Shon et al.'s prepare_data.py: statistics over frames
    ``[max(0, t - w/2), min(T, t + w/2))`` of the valid frames (population std)."""
    t = feats.shape[1]
    half = window // 2
    m = frame_mask(length, t)[..., None].astype(feats.dtype)
    # centre per utterance first: the windowed sums then stay well conditioned in float32
    mu = (feats * m).sum(1, keepdims=True) / jnp.maximum(m.sum(1, keepdims=True), 1)
    x = (feats - mu) * m

    def wsum(v):
        return jax.lax.reduce_window(v, 0.0, jax.lax.add, (1, 2 * half, 1), (1, 1, 1),
                                     [(0, 0), (half, half - 1), (0, 0)])

    pos = jnp.arange(t)[None, :]
    cnt = (jnp.minimum(length[:, None], pos + half) - jnp.maximum(0, pos - half))
    cnt = jnp.maximum(cnt, 1).astype(feats.dtype)[..., None]
    mean = wsum(x) / cnt
    out = x - mean
    if variance:
        var = jnp.maximum(wsum(x * x) / cnt - mean ** 2, 0.0)
        out = out / jnp.sqrt(var + 1e-12)
    return out


def features(cfg: CNNConfig, waveforms: jax.Array, lengths: jax.Array):
    """[B, S] waveforms -> ([B, T, n_features] features, [B] valid frames).

    librosa's centred STFT (``pad_mode`` 'constant' as librosa >= 0.10, or 'reflect' as the
    librosa 0.5 that Shon et al. used), periodic Hann window, power spectrum, Slaney mel filters;
    ``logmel`` = ``log(max(mel, log_floor))``; ``mfcc`` = DCT-II (ortho) of
    ``power_to_db(mel, top_db)``. Then, optionally, the energy VAD (dropped frames are removed and
    the rest moved up) and utterance-level or sliding-window CMN / CMVN. Padded frames are zero.
    """
    window, mel_t, dct_t = _frontend_constants(
        (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.mel_bands, cfg.fmin, cfg.fmax,
         cfg.n_features))
    b, s = waveforms.shape
    lengths = jnp.asarray(lengths, jnp.int32)
    x = _padded_signal(waveforms, lengths, cfg.n_fft // 2, cfg.pad_mode)
    t = 1 + s // cfg.hop_length
    idx = jnp.arange(t)[:, None] * cfg.hop_length + jnp.arange(cfg.n_fft)[None, :]
    frames_raw = x[:, idx]  # [B, T, n_fft]
    spec = jnp.fft.rfft(frames_raw * window, axis=-1)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    mel = jnp.matmul(power, mel_t, precision=HI)
    nfr = num_frames(lengths, cfg.hop_length)
    valid2 = frame_mask(nfr, t)
    valid = valid2[..., None]
    if cfg.features == "logmel":
        feats = jnp.log(jnp.maximum(mel, cfg.log_floor))
    else:
        db = 10.0 * jnp.log10(jnp.maximum(mel, 1e-10))
        if cfg.top_db is not None:
            peak = jnp.max(jnp.where(valid, db, -jnp.inf), axis=(1, 2), keepdims=True)
            db = jnp.maximum(db, peak - cfg.top_db)
        feats = jnp.matmul(db, dct_t, precision=HI)
    if cfg.vad:
        keep = _energy_vad(frames_raw, valid2)
        order = jnp.argsort(~keep, axis=1, stable=True)
        feats = jnp.take_along_axis(feats, order[..., None], axis=1)
        nfr = keep.sum(1).astype(jnp.int32)
        valid = frame_mask(nfr, t)[..., None]
    if cfg.normalize in ("mean", "meanvar"):
        m = valid.astype(feats.dtype)
        n = jnp.maximum(m.sum(1, keepdims=True), 1)
        mean = (feats * m).sum(1, keepdims=True) / n
        feats = feats - mean
        if cfg.normalize == "meanvar":
            var = (feats ** 2 * m).sum(1, keepdims=True) / n
            feats = feats / jnp.sqrt(var + 1e-10)
    elif cfg.normalize.startswith("sliding"):
        feats = _sliding_cmvn(feats, nfr, cfg.cmvn_window, cfg.normalize == "sliding_meanvar")
    return jnp.where(valid, feats, 0.0), nfr


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------
def _same_padding(k: int, s: int):
    """TF 'SAME' padding when the input length is a multiple of the stride."""
    p = max(k - s, 0)
    return (p // 2, p - p // 2)


def _align_same(h, length, k: int, s: int):
    """Shift each utterance so a fixed-padding strided conv equals TF 'SAME' on its valid length.

    TF pads ``k - r`` frames (``r = T mod s``, or ``s`` when 0) with ``(k - r) // 2`` on the left,
    so the left padding depends on the utterance's own length ``T``; here the conv pads
    ``(k - s) // 2`` and each utterance is shifted right by the difference (zeros shift in). ``s``
    zero frames are appended first so no valid frame falls off the end.
    """
    h = jnp.pad(h, ((0, 0), (0, s), (0, 0)))
    r = length % s
    base = max(k - s, 0) // 2
    left = jnp.where(r == 0, base, jnp.maximum(k - r, 0) // 2)
    shift = (left - base)[:, None]
    idx = jnp.arange(h.shape[1])[None, :] - shift
    out = jnp.take_along_axis(h, jnp.clip(idx, 0, h.shape[1] - 1)[..., None], axis=1)
    return jnp.where((idx >= 0)[..., None], out, 0.0)


class InferenceBatchNorm(nn.Module):
    """``tf.nn.batch_normalization`` with population statistics (TF ``bn*`` variables)."""

    eps: float = 1e-3

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        mean = self.param("mean", nn.initializers.zeros, (d,))
        var = self.param("var", nn.initializers.ones, (d,))
        return (x - mean) * (scale / jnp.sqrt(var + self.eps)) + bias


class DialectCNN(nn.Module):
    """Frame-level convs, pooling, FC layers, classifier (Shon et al. ``e2e_model.nn.net``)."""

    config: CNNConfig

    @nn.compact
    def __call__(self, feats, frames, masks=None):
        """feats [B, T, F] (T a multiple of the total stride, padded frames zero), frames [B]."""
        c = self.config
        outs, lens = [], []
        h, length = feats, frames
        for i, (f, k, s) in enumerate(zip(c.filters, c.kernels, c.strides)):
            name = f"cnn{i + 1}"
            if s > 1:
                h = _align_same(h, length, k, s)
            h = nn.Conv(f, (k,), strides=(s,), padding=[_same_padding(k, s)], name=name,
                        kernel_init=nn.initializers.xavier_uniform(),
                        bias_init=nn.initializers.constant(0.001), precision=HI)(h)
            length = length // s
            if c.batch_norm:
                h = InferenceBatchNorm(c.bn_eps, name=f"bn{i + 1}")(h)
            h = jax.nn.relu(h)
            h = apply_layer_mask(h, masks, name)
            h = jnp.where(frame_mask(length, h.shape[1])[..., None], h, 0.0)
            outs.append(h)
            lens.append(length)
        m = frame_mask(length, h.shape[1])[..., None].astype(h.dtype)
        n = jnp.maximum(length, 1).astype(h.dtype)[:, None]
        mean = h.sum(1) / n
        if c.pooling == "stats":
            var = (((h - mean[:, None]) ** 2) * m).sum(1) / n
            z = jnp.concatenate([mean, jnp.sqrt(var + c.stats_eps)], axis=-1)
        else:
            z = mean
        ones = jnp.ones_like(frames)
        for j, d in enumerate(c.fc_dims):
            name = f"fc{j + 1}"
            z = nn.Dense(d, name=name, kernel_init=nn.initializers.xavier_uniform(),
                         precision=HI)(z)
            if c.batch_norm:
                z = InferenceBatchNorm(c.bn_eps, name=f"bn{len(c.filters) + j + 1}")(z)
            z = jax.nn.relu(z)
            z = apply_layer_mask(z, masks, name)
            outs.append(z[:, None, :])
            lens.append(ones)
        logits = nn.Dense(c.n_classes, name="classifier", precision=HI,
                          kernel_init=nn.initializers.xavier_uniform())(z)
        return outs, lens, logits


@register("cnn", architecture="cnn")
@dataclasses.dataclass
class CNNEncoder(Encoder):
    """Shon et al.'s dialect / speaker-ID CNN as a speechinterp encoder (layers cnn1..4, fc1, fc2)."""

    config_cls = CNNConfig
    family: str = "cnn"

    @classmethod
    def from_preset(cls, name: str, seed: int = 0, **overrides) -> "CNNEncoder":
        enc = cls(config=preset_config(name, **overrides), family="cnn")
        return enc.init_random(seed)

    @property
    def module(self) -> DialectCNN:
        return DialectCNN(self.config)

    @property
    def layer_names(self) -> list[str]:
        c = self.config
        return ([f"cnn{i + 1}" for i in range(len(c.filters))]
                + [f"fc{j + 1}" for j in range(len(c.fc_dims))])

    @property
    def total_stride(self) -> int:
        return int(np.prod(self.config.strides))

    def features(self, waveforms, lengths):
        """Front-end features [B, T, F] (T padded to a multiple of the total stride), frames [B]."""
        feats, nfr = features(self.config, waveforms, lengths)
        t = feats.shape[1]
        pad = (-t) % self.total_stride
        return jnp.pad(feats, ((0, 0), (0, pad), (0, 0))), nfr

    def apply_features(self, params, feats, frames, masks=None):
        """The network on given features: (layer outputs, valid lengths, logits)."""
        pad = (-feats.shape[1]) % self.total_stride
        feats = jnp.pad(jnp.asarray(feats, jnp.float32), ((0, 0), (0, pad), (0, 0)))
        feats = jnp.where(frame_mask(frames, feats.shape[1])[..., None], feats, 0.0)
        return self.module.apply({"params": params}, feats, jnp.asarray(frames), masks)

    def forward(self, params, waveforms, lengths, masks=None):
        feats, nfr = self.features(waveforms, lengths)
        return self.module.apply({"params": params}, feats, nfr, masks)

    def apply(self, params, waveforms, lengths, masks=None):
        outs, lens, _ = self.forward(params, waveforms, lengths, masks)
        return outs, lens

    def classify(self, params, waveforms, lengths, masks=None):
        """Classifier logits [B, n_classes] (masks act inside the forward pass)."""
        return self.forward(params, waveforms, lengths, masks)[2]

    def predict_logits(self, waveforms, lengths=None, masks=None, params=None):
        """Jitted, bucketed :meth:`classify` on a list of waveforms or a padded batch."""
        self.check_masks(masks)
        batch, lens = self.prepare(waveforms, lengths)
        fn = self.__dict__.get("_jit_classify")
        if fn is None:
            fn = self.__dict__["_jit_classify"] = jax.jit(self.classify)
        return fn(self.params if params is None else params, jnp.asarray(batch),
                  jnp.asarray(lens), masks)

    def init_params(self, rng):
        return jax.tree.map(np.asarray, self._init(rng))

    def _init(self, rng):
        c = self.config
        t = 2 * self.total_stride
        variables = self.module.init(rng, jnp.zeros((1, t, c.n_features), jnp.float32),
                                     jnp.full((1,), t, jnp.int32))
        return variables["params"]

    def min_samples(self) -> int:
        # at least one frame after every strided conv: 1 + S // hop >= total stride
        return max(400, (self.total_stride - 1) * self.config.hop_length)

    def param_shapes(self) -> dict:
        """``{"cnn1/kernel": shape, ...}`` for the architecture (flattened with '/')."""
        shapes = jax.eval_shape(self._init, jax.random.PRNGKey(0))
        flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
        return {"/".join(p.key for p in path): tuple(v.shape) for path, v in flat}
