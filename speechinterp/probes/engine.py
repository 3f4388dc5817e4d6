"""The probe engine: the one place that trains probes.

:func:`train` trains a set of probes (:class:`ProbeSpecs`: each reads a column interval of X
and predicts one label row with its own penalties) for every seed's batch plan, and returns
their parameters and predictions on the evaluation rows (:class:`Trained`). Every probe gets
exactly :func:`~.elastic_net.fit_probe`'s updates with the same batch plan and initial weights,
the one-probe reference the tests hold it to.

* **Bands.** The probes of a device are cut into bands (:func:`~.elastic_net.interval_bands`):
  one row gather per step serves them all and each band is one matrix product.
* **Every device.** The probes are split into contiguous groups of about equal cost, one per
  device (``jax.devices()``; under ``jax.distributed`` the devices of every host, each host
  training the groups of its own devices). Each group's parameters live on its device
  (``jax.sharding.SingleDeviceSharding``) and the groups train concurrently through JAX's
  asynchronous dispatch; their predictions are gathered to every host.
* **In memory or streamed.** With X in memory (:class:`~.features.InMemory`) a group's whole
  training is one jitted ``lax.scan``, compiled ahead of time (:func:`plan` starts the
  compilations in background threads while the data loads). With X streamed from the store's
  files (:class:`~.features.Streamed`) a jitted step runs per mini-batch, the next batch read
  in a background thread, and the evaluation rows are predicted in chunks.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from speechinterp.probes import elastic_net as EN
from speechinterp.probes import univariate as U
from speechinterp.probes.data import aligned_empty
from speechinterp.probes.features import Features, InMemory

_POOL = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2)))
_AOT: dict = {}


def submit(fn, *args, **kwargs):
    """Run ``fn`` in the engine's background threads (compilations, batch plans): a future."""
    return _POOL.submit(fn, *args, **kwargs)


@dataclasses.dataclass(frozen=True)
class ProbeSpecs:
    """P probes: probe p reads columns ``[lo[p], hi[p])`` of X, predicts label row
    ``label[p]`` of Y, with penalties ``l1[p]``, ``l2[p]``."""

    lo: np.ndarray
    hi: np.ndarray
    label: np.ndarray
    l1: np.ndarray
    l2: np.ndarray

    def __post_init__(self):
        for f, t in (("lo", np.int64), ("hi", np.int64), ("label", np.int32),
                     ("l1", np.float32), ("l2", np.float32)):
            object.__setattr__(self, f, np.asarray(getattr(self, f), t).reshape(-1))

    def __len__(self) -> int:
        return len(self.lo)

    @staticmethod
    def concat(*specs: "ProbeSpecs") -> "ProbeSpecs":
        return ProbeSpecs(*(np.concatenate([getattr(s, f) for s in specs])
                            for f in ("lo", "hi", "label", "l1", "l2")))

    def take(self, idx) -> "ProbeSpecs":
        return ProbeSpecs(self.lo[idx], self.hi[idx], self.label[idx], self.l1[idx],
                          self.l2[idx])

    def with_lambdas(self, l1: float, l2: float) -> "ProbeSpecs":
        n = len(self)
        return dataclasses.replace(self, l1=np.full(n, l1, np.float32),
                                   l2=np.full(n, l2, np.float32))


@dataclasses.dataclass
class Group:
    """The probes ``probes`` (indices into the job's specs) trained on ``device``."""

    probes: np.ndarray
    bands: EN.Bands
    device: jax.Device
    compiled: object = None          # a future of the ahead-of-time executable

    @property
    def local(self) -> bool:
        return self.device.process_index == jax.process_index()


@dataclasses.dataclass
class Job:
    """A training call's layout: the probes, their groups and bands, and the shapes."""

    specs: ProbeSpecs
    groups: list
    cfg: EN.ProbeConfig
    num_classes: int
    seeds: int
    num_rows: int
    num_cols: int
    num_train: int

    def with_lambdas(self, l1: float, l2: float) -> "Job":
        """The same layout with every probe's penalties set to (l1, l2): the lambdas are data,
        so the compiled executables still apply."""
        def group(g):
            n = len(g.probes)
            return dataclasses.replace(g, bands=dataclasses.replace(
                g.bands, l1=np.full(n, l1, np.float32), l2=np.full(n, l2, np.float32)))
        return dataclasses.replace(self, specs=self.specs.with_lambdas(l1, l2),
                                   groups=[group(g) for g in self.groups])


# ----------------------------------------------------------------------------- batch plans
def seed_keys(seed, seeds: int):
    """The batch-plan key of each of ``seeds`` seeds."""
    return jax.random.split(jax.random.PRNGKey(seed), seeds)


@functools.partial(jax.jit, static_argnames=("seeds", "num_train", "cfg"))
def _batch_plans(seed, w, *, seeds, num_train, cfg):
    return jax.vmap(lambda k: EN.batch_plan(k, w, num_train=num_train, cfg=cfg)[:2])(
        seed_keys(seed, seeds))


def batch_plans(seed: int, train: np.ndarray, row_of: np.ndarray, *, seeds: int,
                cfg: EN.ProbeConfig):
    """Each seed's mini-batches (:func:`~.elastic_net.batch_plan` with key
    :func:`seed_keys`), drawn on the task order (``train`` marks its training rows) and mapped
    to engine rows by ``row_of``: host arrays idx, valid [S, steps, batch]."""
    idx, valid = jax.tree.map(np.asarray, _batch_plans(
        seed, np.asarray(train, np.float32), seeds=seeds, num_train=int(np.sum(train)),
        cfg=cfg))
    return row_of[idx], valid


# ----------------------------------------------------------------------------- layout
def _split_groups(specs: ProbeSpecs, n: int) -> list[np.ndarray]:
    """Contiguous runs of probes of about equal cost (columns read), at most ``n``."""
    cost = np.cumsum((specs.hi - specs.lo).astype(np.float64))
    n = max(1, min(n, len(specs)))
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, n) / n, side="left") + 1
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 1, len(specs)), [len(specs)]]))
    return [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _sds(shape, dtype=jnp.float32, device=None):
    sharding = None if device is None else SingleDeviceSharding(device)
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype),
                                sharding=sharding)


def plan(specs: ProbeSpecs, *, num_rows: int, num_cols: int, num_train: int, num_classes: int,
         cfg: EN.ProbeConfig, seeds: int, devices=None, band_cost: float = 3000.0,
         precompile: bool = True) -> Job:
    """Lay ``specs`` out over ``devices`` (default: every device of every host) and start
    compiling each group's in-memory training in the background (``precompile``)."""
    devices = list(jax.devices() if devices is None else devices)
    groups = []
    for probes in _split_groups(specs, len(devices)):
        s = specs.take(probes)
        bands = EN.interval_bands(s.lo, s.hi, s.label, s.l1, s.l2, band_cost=band_cost)
        groups.append(Group(probes, bands, devices[len(groups)]))
    job = Job(specs, groups, cfg, num_classes, seeds, num_rows, num_cols, num_train)
    if precompile:
        for g in groups:
            if g.local:
                g.compiled = _precompile(job, g)
    return job


def _fit_args_sds(job: Job, g: Group):
    bs, nb = EN.batch_shape(job.num_train, job.cfg)
    S, dev = job.seeds, g.device
    steps = job.cfg.epochs * nb
    init = jax.tree.map(lambda a: _sds((S,) + a.shape, device=dev),
                        EN.init_bands(g.bands, job.num_classes))
    bands = jax.tree.map(lambda a: _sds(np.shape(a), np.asarray(a).dtype, dev), g.bands)
    return (_sds((job.num_rows, job.num_cols), device=dev),
            _sds((2, job.num_rows), jnp.int32, dev), _sds((job.num_rows,), device=dev), bands,
            _sds((S, steps, bs), jnp.int32, dev), _sds((S, steps, bs), device=dev), init,
            _sds((job.num_rows - job.num_train, job.num_cols), device=dev))


def _statics(job: Job) -> dict:
    return dict(num_classes=job.num_classes,
                steps_per_epoch=EN.batch_shape(job.num_train, job.cfg)[1], cfg=job.cfg)


def _precompile(job: Job, g: Group):
    """A future of :func:`_fit_eval` compiled for this group's shapes (kept for later calls
    with the same shapes: other tasks of the same store)."""
    sds = _fit_args_sds(job, g)
    statics = _statics(job)
    leaves, tree = jax.tree.flatten(sds)
    key = (tree, tuple((l.shape, str(l.dtype), str(l.sharding)) for l in leaves),
           tuple(sorted(statics.items())))
    if key not in _AOT:
        if len(_AOT) > 64:   # bound the executables kept alive across many tasks
            _AOT.clear()
        _AOT[key] = _POOL.submit(lambda: _fit_eval.lower(*sds, **statics).compile())
    return _AOT[key]


# ----------------------------------------------------------------------------- initial weights
def initial_params(bands: EN.Bands, specs: ProbeSpecs, probes: np.ndarray, num_classes: int,
                   cfg: EN.ProbeConfig, seed: int, seeds: int) -> dict:
    """Initial parameters of a group's bands, leading axis [seeds] (host numpy): zeros, or
    torch ``nn.Linear``'s U(+-1/sqrt(fan_in)) drawn per probe from
    ``default_rng([seed, s, probe])``, so a probe starts alike whatever group it is in."""
    p0 = EN.init_bands(bands, num_classes)
    out = jax.tree.map(lambda a: np.zeros((seeds,) + a.shape, a.dtype), p0)
    if cfg.init == "zeros":
        return out
    if cfg.init != "uniform":
        raise ValueError(f"unknown init {cfg.init!r}; use zeros or uniform")
    C = num_classes
    for s in range(seeds):
        for q, p in enumerate(probes):
            lo, hi = int(specs.lo[p]), int(specs.hi[p])
            rng = np.random.default_rng([seed, s, int(p)])
            bound = 1.0 / np.sqrt(hi - lo)
            Wp = (rng.uniform(-1.0, 1.0, (C, hi - lo)) * bound).astype(np.float32)
            out["b"][s, q] = rng.uniform(-1.0, 1.0, C) * bound
            for b, (start, width, S, runs) in enumerate(bands.layout):
                hp = EN._head_probes(runs, S, EN._num_heads(runs))
                for st, h in zip(*np.nonzero(hp == q)):
                    c0 = start + st * width
                    a, z = max(c0, lo), min(c0 + width, hi)
                    if a < z:
                        out["W"][b][s, st, h, :, a - c0:z - c0] = Wp[:, a - lo:z - lo]
    return out


# ----------------------------------------------------------------------------- training
@functools.partial(jax.jit, static_argnames=("num_classes", "steps_per_epoch", "cfg"))
def _fit_eval(X, Y, w, bands, idx, valid, params0, X_eval, *, num_classes, steps_per_epoch,
              cfg):
    """:func:`~.elastic_net.fit_bands_planned` for every seed's plan idx, valid [S, steps,
    batch] and initial parameters (leading [S]), and the classes predicted on X_eval:
    (params, classes [S, P, N_eval])."""
    def one(i, v, p0):
        P = EN.fit_bands_planned(X, Y, w, bands, i, v, p0, num_classes=num_classes,
                                 steps_per_epoch=steps_per_epoch, cfg=cfg)
        return P, EN.predict_bands(X_eval, bands, P)
    if idx.shape[0] == 1:   # one seed: no vmap (a third less tracing)
        out = one(idx[0], valid[0], jax.tree.map(lambda a: a[0], params0))
        return jax.tree.map(lambda a: a[None], out)
    return jax.vmap(one)(idx, valid, params0)


@functools.partial(jax.jit, static_argnames=("cfg", "steps_per_epoch"), donate_argnums=(0, 1))
def _stream_step(params, state, bands, Xb, Yb, wb, *, cfg, steps_per_epoch):
    """One optimiser step for every seed (leading [S] axes) on its mini-batch Xb [S, B, K]."""
    opt = EN.optimizer(cfg, steps_per_epoch)
    return jax.vmap(lambda p, s, x, y, w: EN.bands_update(p, s, bands, x, y, w, opt,
                                                          cfg.squared_l2))(
        params, state, Xb, Yb, wb)


@functools.partial(jax.jit, static_argnames=("cfg", "steps_per_epoch"))
def _stream_init(params, *, cfg, steps_per_epoch):
    return jax.vmap(EN.optimizer(cfg, steps_per_epoch).init)(params)


@jax.jit
def _predict_seeds(params, bands, X):
    return jax.vmap(lambda p: EN.predict_bands(X, bands, p))(params)


@dataclasses.dataclass
class Trained:
    """A job's trained probes: ``params`` per group (leading [S] axis; None for groups of
    other hosts) and ``predictions`` [S, P, N_eval] in the job's probe order."""

    job: Job
    params: list
    predictions: np.ndarray

    @property
    def devices(self) -> list[str]:
        return sorted({str(g.device) for g in self.job.groups})

    def _where(self, probe: int):
        for gi, g in enumerate(self.job.groups):
            hit = np.flatnonzero(g.probes == probe)
            if len(hit):
                return gi, int(hit[0])
        raise IndexError(f"no probe {probe}")

    def weights(self, probe: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Probe ``probe``'s weights [K, C] on X's columns and bias [C] (host)."""
        gi, q = self._where(probe)
        g = self.job.groups[gi]
        K, C = self.job.num_cols, self.job.num_classes
        if self.params[gi] is None:
            W, b = np.zeros((K, C), np.float32), np.zeros(C, np.float32)
        else:
            p = jax.tree.map(lambda a: np.asarray(a[seed]), self.params[gi])
            W, b = EN.probe_weights(p, g.bands, q, K), p["b"][q]
        if jax.process_count() > 1:   # the owner's values, to every host
            from jax.experimental import multihost_utils
            W, b = (np.asarray(multihost_utils.process_allgather(a)).sum(0) for a in (W, b))
        return W, b


def _batches(X: Features, Y: np.ndarray, w: np.ndarray, idx: np.ndarray, valid: np.ndarray):
    """The mini-batches of every seed, step by step: (Xb [S, B, K], Yb [S, T, B], wb [S, B]),
    each read in a background thread while the previous one trains."""
    def read(t):
        rows = idx[:, t]                                          # [S, B]
        Xb = X.rows(rows.reshape(-1)).reshape(rows.shape + (X.shape[1],))
        return Xb, np.moveaxis(Y[:, rows], 0, 1), w[rows] * valid[:, t]
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(read, 0)
        for t in range(idx.shape[1]):
            cur = nxt.result()
            if t + 1 < idx.shape[1]:
                nxt = pool.submit(read, t + 1)
            yield cur


def train(job: Job, X: Features, Y: np.ndarray, plans, *, init_seed: int) -> Trained:
    """Train every probe of ``job`` on X [N, K] (rows ``num_train:`` are the evaluation rows)
    and labels Y [T, N], one batch plan per seed (``plans``: idx, valid [S, steps, batch]),
    initial weights from ``init_seed`` (:func:`initial_params`)."""
    idx, valid = plans
    S, ntr, C = job.seeds, job.num_train, job.num_classes
    w = (np.arange(X.shape[0]) < ntr).astype(np.float32)
    statics = _statics(job)
    params, preds = [], []
    streams = None if X.in_memory else _batches(X, Y, w, idx, valid)
    states = []
    for g in job.groups:
        if not g.local:
            params.append(None)
            preds.append(None)
            continue
        put = functools.partial(jax.device_put, device=g.device)
        p0 = put(initial_params(g.bands, job.specs, g.probes, C, job.cfg, init_seed, S))
        bands = put(g.bands)
        if X.in_memory:
            args = (put(X.array), put(Y), put(w), bands, put(idx[:S]), put(valid[:S]), p0,
                    put(X.array[ntr:]))
            fn = g.compiled.result() if g.compiled is not None else functools.partial(
                _fit_eval, **statics)
            P, pred = fn(*args)                  # asynchronous: the groups run concurrently
            params.append(P)
            preds.append(pred)
        else:
            params.append(p0)
            states.append(_stream_init(p0, cfg=job.cfg, steps_per_epoch=statics[
                "steps_per_epoch"]))
            preds.append(None)
    if streams is not None:
        local = [i for i, g in enumerate(job.groups) if g.local]
        bands = {gi: jax.device_put(job.groups[gi].bands, job.groups[gi].device) for gi in local}
        for Xb, Yb, wb in streams:
            for j, gi in enumerate(local):
                put = functools.partial(jax.device_put, device=job.groups[gi].device)
                params[gi], states[j] = _stream_step(
                    params[gi], states[j], bands[gi], put(Xb), put(Yb), put(wb),
                    cfg=job.cfg, steps_per_epoch=statics["steps_per_epoch"])
            # one step in flight per device: dispatch runs ahead otherwise, and every queued
            # step holds its batch (host memory would grow with the store)
            jax.block_until_ready([params[gi] for gi in local])
        preds = _predict_streamed(job, X, params)
    out = np.zeros((S, len(job.specs), X.shape[0] - ntr), np.int32)
    for g, pred in zip(job.groups, preds):
        if pred is not None:
            out[:, g.probes] = np.asarray(pred)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        out = np.asarray(multihost_utils.process_allgather(out)).sum(0).astype(np.int32)
    return Trained(job, params, out)


def _predict_streamed(job: Job, X: Features, params: list) -> list:
    """Classes [S, P_g, N_eval] of every local group, the evaluation rows read in chunks."""
    ntr, N = job.num_train, X.shape[0]
    parts = [[] for _ in job.groups]
    for rows in X.chunks(np.arange(ntr, N)):
        Xc = X.rows(rows)
        for gi, g in enumerate(job.groups):
            if g.local:
                put = functools.partial(jax.device_put, device=g.device)
                parts[gi].append(np.asarray(_predict_seeds(params[gi], put(g.bands), put(Xc))))
    return [np.concatenate(p, axis=-1) if p else None for p in parts]


# ----------------------------------------------------------------------------- per-neuron
def neuron_dev_accuracy(arrays, lam) -> np.ndarray:
    """Dev accuracy [K] of a univariate probe on each neuron (all layers), each solved by
    safeguarded Newton steps (:mod:`~.univariate`; ridge ``lam[1]``) instead of trained by
    Adam; with a streamed X the Newton statistics are summed over chunks of training rows."""
    ntr = arrays.num_train
    y, C = arrays.Y[0], arrays.num_classes
    l2 = float(lam[1])
    dev = ntr + np.flatnonzero(arrays.dev)
    if arrays.X.in_memory:
        X = arrays.X.array
        P = U.fit_neurons(X[:ntr], y[:ntr], np.ones(ntr, np.float32), num_classes=C, l2=l2)
        pred = U.predict_neurons(P, X[dev])
    else:
        def chunks():
            for r in arrays.X.chunks(np.arange(ntr)):
                yield arrays.X.rows(r), y[r], np.ones(len(r), np.float32)
        P = U.fit_neurons_streamed(chunks, num_classes=C, l2=l2)
        pred = np.concatenate([U.predict_neurons(P, arrays.X.rows(r))
                               for r in arrays.X.chunks(dev)], axis=1)
    return np.mean(pred == y[dev], axis=-1)


def fit(X: np.ndarray, Y: np.ndarray, specs: ProbeSpecs, *, num_train: int, num_classes: int,
        cfg: EN.ProbeConfig = EN.DEFAULT, seed: int = 0, seeds: int = 1, devices=None,
        band_cost: float = 3000.0) -> Trained:
    """:func:`train` on an in-memory X [N, K] whose first ``num_train`` rows are the training
    rows, Y [T, N]; the plain entry point (the predictions are on rows ``num_train:``)."""
    N = X.shape[0]
    job = plan(specs, num_rows=N, num_cols=X.shape[1], num_train=num_train,
               num_classes=num_classes, cfg=cfg, seeds=seeds, devices=devices,
               band_cost=band_cost, precompile=False)
    plans = batch_plans(seed, np.arange(N) < num_train, np.arange(N, dtype=np.int32),
                        seeds=seeds, cfg=cfg)
    Xa = aligned_empty(np.shape(X))
    Xa[...] = X
    return train(job, InMemory(Xa), np.asarray(Y, np.int32).reshape(-1, N), plans,
                 init_seed=seed)

