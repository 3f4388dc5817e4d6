"""The encoder contract shared by every family (see docs/design.md, "The encoder contract").

A family subclasses :class:`Encoder` and implements three pure pieces:

* ``apply(params, waveforms, lengths, masks) -> (outputs, out_lengths)``: a pure, jittable
  function; ``waveforms`` is float32 [B, S] at ``sample_rate``, ``lengths`` int32 [B] valid
  samples; ``outputs`` is a list with one [B, T_k, D_k] array per probed layer (utterance-level
  layers use T_k = 1), ``out_lengths`` a list of int32 [B] valid frames per layer.
* ``init_params(rng) -> params``: fresh random weights for the architecture.
* ``layer_names``: names of the probed layers, in order.

``masks`` maps a layer name to a per-neuron multiplier [D] (1 keeps, 0 ablates), to a pair
``(keep, value)`` that replaces ablated neurons by ``value``, or to an affine map of the layer's
frame vectors (:class:`AffineMap`, or a dict ``{"matrix": [D, D], "bias": [D]}``): each frame
``h`` [D] becomes ``h @ matrix + bias`` (row vectors; concept erasure, see
:mod:`speechinterp.analysis.erasure`). Every kind is applied *inside* the forward pass
(:func:`apply_layer_mask`), where the layer's output is produced and before the next layer reads
it, so later layers see the ablation or erasure. Masks are traced arguments of the jitted
forward pass: new values never recompile. A name that is not one of ``layer_names``, or a
malformed affine map, is an error (:meth:`Encoder.check_masks`), never silently ignored; a
width that disagrees with the layer's is an error naming the layer and its width.

Mean pooling over frames is linear, so the pooled vector of an affinely masked layer is the
affine map of the unmasked layer's pooled vector: an eraser fitted on a store's utterance
vectors applies unchanged to the frames.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Masks = Mapping[str, Any]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["matrix", "bias"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class AffineMap:
    """``x -> x @ matrix + bias`` on row vectors x [..., D]: matrix [D, D], bias [D].

    A pytree, so it passes through ``jax.jit`` as a traced mask entry (a plain dict with the keys
    ``matrix`` and ``bias`` works the same)."""

    matrix: Any
    bias: Any

    def __call__(self, x):
        return affine_apply(x, self.matrix, self.bias)

    @property
    def dim(self) -> int:
        return int(np.shape(self.matrix)[0])

    @classmethod
    def identity(cls, dim: int) -> "AffineMap":
        return cls(np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32))

    def as_dict(self) -> dict:
        return {"matrix": self.matrix, "bias": self.bias}


def is_affine(m) -> bool:
    """True for an :class:`AffineMap` or a dict mask entry (``{"matrix", "bias"}``)."""
    return isinstance(m, (AffineMap, Mapping))


def _affine_parts(m):
    return (m.matrix, m.bias) if isinstance(m, AffineMap) else (m.get("matrix"), m.get("bias"))


def affine_apply(x, matrix, bias):
    """``x @ matrix + bias`` on the last axis, at full float32 precision on every backend."""
    x = jnp.asarray(x)
    return (jnp.dot(x, jnp.asarray(matrix, x.dtype), precision=jax.lax.Precision.HIGHEST)
            + jnp.asarray(bias, x.dtype))


def affine_problems(name: str, m, width: int | None = None) -> list[str]:
    """What is wrong with the affine mask entry ``m`` of layer ``name`` (empty when nothing):
    keys other than matrix / bias, a matrix that is not square, a bias of another length, and,
    with ``width``, a size other than the layer's."""
    out = []
    if isinstance(m, Mapping) and set(m) != {"matrix", "bias"}:
        return [f"the affine map for layer {name!r} has keys {sorted(map(str, m))}; it needs "
                f"exactly 'matrix' [D, D] and 'bias' [D]"]
    matrix, bias = _affine_parts(m)
    ms, bs = tuple(np.shape(matrix)), tuple(np.shape(bias))
    d = width if width is not None else (ms[0] if ms else None)
    if ms != (d, d) or bs != (d,):
        need = (f"the layer has {width} neurons, so it needs" if width is not None
                else "it needs")
        out.append(f"the affine map for layer {name!r} has matrix {list(ms)} and bias "
                   f"{list(bs)}; {need} matrix [{d}, {d}] and bias [{d}]")
    return out


def apply_layer_mask(h: jax.Array, masks: Masks | None, name: str) -> jax.Array:
    """Apply ``masks[name]`` (if any) to the last axis of ``h``: a per-neuron multiplier, a
    ``(keep, value)`` pair, or an affine map ``h @ matrix + bias``."""
    if not masks or name not in masks:
        return h
    m = masks[name]
    if is_affine(m):
        problems = affine_problems(name, m, h.shape[-1])   # shapes are static under jit
        if problems:
            raise ValueError(problems[0])
        return affine_apply(h, *_affine_parts(m))
    keep = m[0] if isinstance(m, (tuple, list)) else m
    if np.ndim(keep) and np.shape(keep)[-1] != h.shape[-1]:   # shapes are static under jit
        raise ValueError(f"the mask for layer {name!r} has {np.shape(keep)[-1]} entries; the "
                         f"layer has {h.shape[-1]} neurons")
    if isinstance(m, (tuple, list)):
        keep, value = m
        keep = jnp.asarray(keep, h.dtype)
        return h * keep + (1 - keep) * jnp.asarray(value, h.dtype)
    return h * jnp.asarray(m, h.dtype)


def frame_mask(lengths: jax.Array, num_frames: int) -> jax.Array:
    """Boolean [B, T]: True on valid frames."""
    return jnp.arange(num_frames)[None, :] < lengths[:, None]


def mean_pool(h: jax.Array, lengths: jax.Array) -> jax.Array:
    """Mean of [B, T, D] over the valid frames of each utterance (docs/method.md)."""
    m = frame_mask(lengths, h.shape[1]).astype(h.dtype)[..., None]
    return (h * m).sum(1) / jnp.maximum(m.sum(1), 1)


def bucket_length(n: int, minimum: int = 16000, growth: float = 1.25) -> int:
    """Round a length up to a geometric bucket, so jit compiles a bounded number of shapes."""
    if n <= minimum:
        return minimum
    k = math.ceil(math.log(n / minimum) / math.log(growth) - 1e-9)
    return int(math.ceil(minimum * growth**k / 160) * 160)


@dataclasses.dataclass
class Encoder:
    """A loaded encoder: family + config + params, with a jitted, length-bucketed forward pass."""

    config: Any
    params: Any = None
    family: str = ""
    sample_rate: int = 16000
    normalize_waveform: bool = False
    source_sha256: str | None = None

    config_cls: ClassVar[Any] = None  # the family's config dataclass

    # ---- to be provided by each family -------------------------------------------------
    @classmethod
    def config_from_dict(cls, d: dict):
        """Rebuild the family's config dataclass from ``config.json``."""
        return cls.config_cls(**d)

    @property
    def layer_names(self) -> list[str]:
        raise NotImplementedError

    def apply(self, params, waveforms, lengths, masks=None):
        raise NotImplementedError

    def init_params(self, rng: jax.Array):
        raise NotImplementedError

    # ---- shared behaviour -------------------------------------------------------------
    def init_random(self, seed: int = 0) -> "Encoder":
        """Same architecture, fresh random weights (the random-weights baseline)."""
        return dataclasses.replace(self, params=self.init_params(jax.random.PRNGKey(seed)),
                                   source_sha256=None)

    def min_samples(self) -> int:
        """Shortest input (samples) that yields at least one frame at every layer."""
        return 400

    def check_masks(self, masks: Masks | None) -> None:
        """Raise ValueError naming any mask whose name is not one of ``layer_names`` and any
        malformed affine map (keys, non-square matrix, bias length), all in one message. A width
        that disagrees with the layer's is found when the forward pass is traced
        (:func:`apply_layer_mask`), with the layer's name and width."""
        if not masks:
            return
        names = list(self.layer_names)
        problems = []
        unknown = [k for k in masks if k not in names]
        if unknown:
            kind = self.family or type(self).__name__
            problems.append(f"masks for unknown layer(s) {unknown} of this {kind} encoder; "
                            f"its layers are {names}")
        for k, m in masks.items():
            if is_affine(m):
                problems += affine_problems(k, m)
        if problems:
            raise ValueError("; ".join(problems))

    def _jitted(self):
        """The jitted ``apply``; masks are checked against ``layer_names`` first."""
        fn = self.__dict__.get("_jit_apply")
        if fn is None:
            jitted = jax.jit(self.apply)

            def fn(params, waveforms, lengths, masks=None):
                self.check_masks(masks)
                return jitted(params, waveforms, lengths, masks)
            self.__dict__["_jit_apply"] = fn
        return fn

    def prepare(self, waveforms: Sequence[np.ndarray] | np.ndarray, lengths=None,
                bucket: bool = True):
        """Pad a list of 1-D waveforms (or a [B, S] batch + lengths) to a bucketed [B, S'] batch."""
        if isinstance(waveforms, np.ndarray) and waveforms.ndim == 2 or (
                isinstance(waveforms, jax.Array) and waveforms.ndim == 2):
            batch = np.asarray(waveforms, np.float32)
            lens = (np.full(batch.shape[0], batch.shape[1], np.int32) if lengths is None
                    else np.asarray(lengths, np.int32))
            rows = [batch[i, :lens[i]] for i in range(batch.shape[0])]
        else:
            rows = [np.asarray(w, np.float32).reshape(-1) for w in waveforms]
            lens = np.array([len(r) for r in rows], np.int32)
        if self.normalize_waveform:
            rows = [(r - r.mean()) / np.sqrt(r.var() + 1e-7) for r in rows]
        longest = max(int(lens.max()), self.min_samples())
        width = bucket_length(longest) if bucket else longest
        out = np.zeros((len(rows), width), np.float32)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
        return out, lens

    def layer_outputs(self, waveforms, lengths=None, masks=None, params=None, bucket=True):
        """Every probed layer's frame-level output and valid lengths (jitted, bucketed)."""
        batch, lens = self.prepare(waveforms, lengths, bucket=bucket)
        outs, out_lens = self._jitted()(self.params if params is None else params,
                                        jnp.asarray(batch), jnp.asarray(lens), masks)
        return outs, out_lens

    def hidden_states(self, waveforms, lengths=None, masks=None):
        """List of [B, T_k, D_k] arrays, cropped to the longest valid length of each layer."""
        outs, out_lens = self.layer_outputs(waveforms, lengths, masks)
        cropped = []
        for h, l in zip(outs, out_lens):
            t = int(np.max(np.asarray(l)))
            cropped.append(h[:, :t])
        return cropped

    def pooled(self, waveforms, lengths=None, masks=None):
        """Utterance vectors: list of [B, D_k] means over valid frames, one per layer."""
        outs, out_lens = self.layer_outputs(waveforms, lengths, masks)
        return [mean_pool(h, l) for h, l in zip(outs, out_lens)]


_REGISTRY: dict[str, Callable[..., Encoder]] = {}

ARCHITECTURES = ("transformer", "cnn", "lstm", "tdnn")


def register(family: str, *, architecture: str):
    """Class decorator: make ``family`` loadable by :func:`speechinterp.encoders.load` and
    declare its architecture (one of :data:`ARCHITECTURES`), the one place analysis reads it."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{family}: architecture {architecture!r} not in {ARCHITECTURES}")

    def deco(cls):
        _REGISTRY[family] = cls
        cls.family_name = family
        cls.architecture = architecture
        return cls
    return deco


def registry() -> dict[str, Callable[..., Encoder]]:
    return dict(_REGISTRY)
