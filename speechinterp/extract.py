"""Layer-wise utterance vectors: jitted forward, length-sorted batches, mean over valid frames,
the batch sharded over all devices (jax.sharding), of every host under jax.distributed."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from speechinterp.encoders.base import mean_pool


def length_batches(lengths, batch_size: int) -> list[np.ndarray]:
    """Indices in batches of similar length (less padding, few bucket shapes)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _shard_batch(batch: np.ndarray, lens: np.ndarray):
    """Pad the batch to a multiple of the device count and shard it over a 1-D mesh.

    The mesh spans every device of every process (``jax.devices()``): under
    ``jax.distributed.initialize()`` each host holds the same host batch and hands its own
    devices their slices (``jax.make_array_from_callback``).
    """
    devs = jax.devices()
    if len(devs) == 1:
        return jnp.asarray(batch), jnp.asarray(lens), len(batch)
    n = len(batch)
    pad = (-n) % len(devs)
    if pad:
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)])
        lens = np.concatenate([lens, np.repeat(lens[-1:], pad)])
    sharding = NamedSharding(Mesh(np.array(devs), ("batch",)), PartitionSpec("batch"))
    put = lambda a: jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
    return put(batch), put(lens), n


@jax.jit
def _pool_all(outs, out_lens):
    return [mean_pool(h, l) for h, l in zip(outs, out_lens)]


def _to_host(v: jax.Array) -> np.ndarray:
    """The whole array on this host, gathered from every process when it spans several."""
    if v.is_fully_addressable:
        return np.asarray(v, np.float32)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(v, tiled=True), np.float32)


def pooled_vectors(encoder, waves, masks=None) -> list[np.ndarray]:
    """Per-layer mean over valid frames for a list of 1-D waveforms: [len(waves), D_k] each."""
    batch, lens = encoder.prepare(waves)
    xb, lb, n = _shard_batch(batch, lens)
    outs, out_lens = encoder._jitted()(encoder.params, xb, lb, masks)
    return [_to_host(v)[:n] for v in _pool_all(outs, out_lens)]


def layer_dims(encoder) -> list[int]:
    """Output width of every probed layer (one short forward pass)."""
    wave = np.random.default_rng(0).normal(0, 0.1, encoder.min_samples() * 2).astype(np.float32)
    return [v.shape[1] for v in pooled_vectors(encoder, [wave])]


# ----------------------------------------------------------------------------- input checks
class ExtractError(ValueError):
    """Input of an extraction is unusable (masks); the message names the culprit. (The manifest
    is read and checked by :func:`speechinterp.corpus.manifest.read_manifest`.)"""


def file_sha256(path: str) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_masks(path: str, layer_names, dims) -> dict:
    """Masks by layer name from an npz, checked against the encoder (docs/formats.md): a key
    ``LAYER`` holds a per-neuron multiplier [D]; the pair ``LAYER.matrix`` [D, D] +
    ``LAYER.bias`` [D] an affine map (``h @ matrix + bias``, e.g. a concept eraser), returned as
    an :class:`~speechinterp.encoders.base.AffineMap`. An unknown layer (listing
    ``layer_names``), a wrong shape, half an affine pair, both kinds for one layer or a
    non-finite value is an :class:`ExtractError`, every problem in one message."""
    import os
    from speechinterp.encoders.base import AffineMap
    if not os.path.isfile(path):
        raise ExtractError(f"--masks={path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:   # not an npz (zip of .npy files)
        raise ExtractError(f"--masks={path}: not a readable .npz ({type(e).__name__}: {e})")
    width = dict(zip(layer_names, dims))
    problems = []
    plain = {k: m for k, m in arrays.items() if not k.endswith((".matrix", ".bias"))}
    affine: dict[str, dict] = {}
    for k, m in arrays.items():
        if k not in plain:
            layer, part = k.rsplit(".", 1)
            affine.setdefault(layer, {})[part] = m
    unknown = [k for k in list(plain) + list(affine) if k not in width]
    if unknown:
        problems.append(f"layer(s) {unknown} not in the encoder; its layers: {list(layer_names)}")
    for k in sorted(set(plain) & set(affine)):
        problems.append(f"{k!r} has both a multiplier and an affine map; give one")
    for k, m in plain.items():
        if k in width and m.shape != (width[k],):
            problems.append(f"{k!r} has shape {m.shape}, the layer has {width[k]} neurons")
        elif k in width and not np.all(np.isfinite(m)):
            problems.append(f"{k!r} has {int(np.sum(~np.isfinite(m)))} non-finite value(s)")
    for k, parts in affine.items():
        missing = [f"{k}.{p}" for p in ("matrix", "bias") if p not in parts]
        if missing:
            problems.append(f"{missing} missing: an affine map needs both {k}.matrix and "
                            f"{k}.bias")
            continue
        if k not in width:
            continue
        d = width[k]
        shapes = (parts["matrix"].shape, parts["bias"].shape)
        if shapes != ((d, d), (d,)):
            problems.append(f"{k!r} has an affine map with matrix {shapes[0]} and bias "
                            f"{shapes[1]}; the layer has {d} neurons, so it needs ({d}, {d}) "
                            f"and ({d},)")
        elif not all(np.all(np.isfinite(a)) for a in parts.values()):
            problems.append(f"{k!r}'s affine map has non-finite value(s)")
    if not arrays:
        problems.append("no masks in the file")
    if problems:
        raise ExtractError(f"--masks={path}: {len(problems)} problem(s): " + "; ".join(problems))
    out: dict = {k: m.astype(np.float32) for k, m in plain.items()}
    out.update({k: AffineMap(p["matrix"].astype(np.float32), p["bias"].astype(np.float32))
                for k, p in affine.items()})
    return out


def save_masks(path: str, masks) -> None:
    """Write masks in :func:`load_masks`'s npz layout (multipliers as ``LAYER``, affine maps
    as ``LAYER.matrix`` + ``LAYER.bias``)."""
    from speechinterp.encoders.base import AffineMap, is_affine
    arrays = {}
    for k, m in masks.items():
        if is_affine(m):
            m = m.as_dict() if isinstance(m, AffineMap) else m
            arrays[f"{k}.matrix"] = np.asarray(m["matrix"], np.float32)
            arrays[f"{k}.bias"] = np.asarray(m["bias"], np.float32)
        else:
            arrays[k] = np.asarray(m, np.float32)
    np.savez(path, **arrays)


def non_finite_rows(vectors, layer_names) -> dict[int, str]:
    """{row: reason} for the rows whose pooled vector is non-finite in any layer."""
    out: dict[int, str] = {}
    for name, v in zip(layer_names, vectors):
        for i in np.flatnonzero(~np.isfinite(v).all(axis=1)):
            out.setdefault(int(i), f"the encoder's output is non-finite (NaN/inf) in layer "
                                   f"{name!r}")
    return out


class SkipLog:
    """``skipped.csv`` (utt_id, path, reason) of an extraction: rows are added per chunk before
    the chunk is committed, and a resumed run first drops the rows of uncommitted chunks, so no
    row is listed twice."""

    HEADER = ["utt_id", "path", "reason"]

    def __init__(self, path: str, rows, done_rows: int):
        import csv
        import os
        self.path = path
        if not os.path.exists(path):
            return
        index = {r["utt_id"]: i for i, r in enumerate(rows)}
        with open(path, newline="") as f:
            old = list(csv.reader(f))[1:]
        keep, seen = [], set()
        for line in old:
            if line and line[0] in index and index[line[0]] < done_rows and line[0] not in seen:
                seen.add(line[0])
                keep.append(line)
        if done_rows == 0 or not keep:
            os.remove(path)
            return
        self._write(keep, "w")

    def _write(self, lines, mode):
        import csv
        import os
        new = mode == "w" or not os.path.exists(self.path)
        with open(self.path, mode if not new else "w", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.HEADER)
            w.writerows(lines)

    def add(self, entries) -> None:
        """Append [(utt_id, path, reason)] (one chunk's, in row order)."""
        if entries:
            self._write([list(e) for e in entries], "a")
