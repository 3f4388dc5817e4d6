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
