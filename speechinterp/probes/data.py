"""From a representation store to probe inputs: labels, splits, standardisation, stacking."""
from __future__ import annotations

import dataclasses
import mmap

import numpy as np

from speechinterp.corpus.splits import PROBE_FRACTIONS, speaker_split, stratified_split
from speechinterp.store import Store

TRAIN, DEV, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "dev", "test")
SPEAKER_TASKS = ("speaker", "speaker_id", "spk")


class TaskError(ValueError):
    """A task cannot be probed on this store (too few classes, an empty split, ...)."""


@dataclasses.dataclass
class TaskData:
    """Labels and splits of one task, restricted to the rows that have a label.

    ``rows`` index the store; ``y``, ``split`` and ``groups`` are aligned with ``rows``.
    """

    task: str
    classes: list[str]
    rows: np.ndarray
    y: np.ndarray
    split: np.ndarray
    groups: np.ndarray | None
    num_missing: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_sizes(self) -> dict[str, int]:
        return {n: int(np.sum(self.split == i)) for i, n in enumerate(SPLIT_NAMES)}

    def weights(self, which: int) -> np.ndarray:
        return (self.split == which).astype(np.float32)


def prepare_task(store: Store, task: str, seed: int = 0) -> TaskData:
    """Labels (empty cells skipped), classes, and the split for ``task``.

    Speaker identity always gets a stratified split of the utterances. Other tasks use the
    store's ``split`` column when it has one; otherwise a stratified split with a fixed seed,
    speaker-disjoint when a ``speaker`` column exists (both
    :mod:`speechinterp.corpus.splits`, 70 / 15 / 15%: ``PROBE_FRACTIONS``).
    """
    labels_all = np.array(store.column(task), dtype=object)
    has = np.array([str(v).strip() != "" for v in labels_all])
    rows = np.flatnonzero(has)
    labels = np.array([str(v).strip() for v in labels_all[rows]])
    classes = sorted(set(labels.tolist()))
    if len(classes) < 2:
        raise TaskError(f"task {task!r} has {len(classes)} class(es) {classes} in "
                        f"{store.path}; a probe needs at least two")
    y = np.searchsorted(np.array(classes), labels).astype(np.int32)
    groups = (np.array(store.column("speaker"), dtype=object)[rows].astype(str)
              if store.has_column("speaker") else None)
    split_col = (np.array(store.column("split"), dtype=object)[rows].astype(str)
                 if store.has_column("split") else None)
    if task in SPEAKER_TASKS:
        # speaker identity needs every speaker in every split: a stratified split of the
        # utterances (a store's split column is speaker-disjoint for the other tasks)
        split = stratified_split(y, seed, PROBE_FRACTIONS)
    elif split_col is not None and any(s.strip() for s in split_col):
        bad = sorted({s for s in split_col if s not in SPLIT_NAMES})
        if bad:   # never drop the column silently (an empty column is no split)
            raise TaskError(f"{store.path}/utterances.csv: split value(s) {bad[:10]} are not "
                            f"{list(SPLIT_NAMES)} ({sum(s in bad for s in split_col)} rows)")
        split = np.array([SPLIT_NAMES.index(s) for s in split_col], np.int32)
    elif groups is not None:
        split = speaker_split(groups, y, PROBE_FRACTIONS, seed)
    else:
        split = stratified_split(y, seed, PROBE_FRACTIONS)
    for i, name in enumerate(SPLIT_NAMES):
        present = set(y[split == i].tolist())
        absent = [classes[c] for c in range(len(classes)) if c not in present]
        if absent:
            raise TaskError(f"task {task!r}: the {name} split has no examples of class(es) "
                            f"{absent[:10]}{' ...' if len(absent) > 10 else ''} "
                            f"({int(np.sum(split == i))} rows in {name})")
    return TaskData(task, classes, rows, y, split, groups, int(np.sum(~has)))


def control_labels(data: TaskData, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: a fixed random label per type (speaker, or utterance
    when there is no speaker column), drawn from the task's training label distribution."""
    rng = np.random.default_rng(seed + 7919)
    prior = np.bincount(data.y[data.split == TRAIN], minlength=data.num_classes).astype(float)
    prior /= prior.sum()
    if data.groups is None:
        return rng.choice(data.num_classes, size=len(data.y), p=prior).astype(np.int32)
    types = np.unique(data.groups)
    table = dict(zip(types, rng.choice(data.num_classes, size=len(types), p=prior)))
    return np.array([table[g] for g in data.groups], np.int32)


def majority_class(data: TaskData) -> int:
    """The most frequent training class."""
    return int(np.bincount(data.y[data.split == TRAIN], minlength=data.num_classes).argmax())


def majority_accuracy(data: TaskData) -> float:
    """Test accuracy of always predicting the most frequent training class."""
    return float(np.mean(data.y[data.split == TEST] == majority_class(data)))


def control_is_relabelling(data: TaskData) -> bool:
    """True when the task's classes are its control types themselves (speaker identity: each
    speaker one class, each class one speaker). Its control task is then a coarsening of the
    task, learnable from the task, and selectivity has no meaning (Hewitt & Liang 2019 define
    types that are finer than the classes)."""
    if data.groups is None:
        return False
    pairs = set(zip(data.groups.tolist(), data.y.tolist()))
    return len(pairs) == len(set(data.groups.tolist())) == data.num_classes


def speakers_per_class(data: TaskData) -> dict | None:
    """``{split: {class: distinct speakers}}``, or None without a speaker column."""
    if data.groups is None:
        return None
    out = {}
    for i, name in enumerate(SPLIT_NAMES):
        sel = data.split == i
        out[name] = {c: int(len(np.unique(data.groups[sel & (data.y == k)])))
                     for k, c in enumerate(data.classes)}
    return out


def standardize(X: np.ndarray, train: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(X - mean) / std with statistics fitted on the train rows only, float32, written into
    ``out`` when given."""
    n = int(np.sum(train))
    Xt = X[:n] if np.all(train[:n]) else X[train]   # train rows first: a view, no copy
    mu = Xt.mean(0)
    sd = Xt.std(0)
    out = np.empty(X.shape, np.float32) if out is None else out
    np.subtract(X, mu, out=out, casting="unsafe")
    out /= np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
    return out


def load_layers(store: Store, data: TaskData) -> list[np.ndarray]:
    """Standardised float32 [N_task, D_k] of every layer (read through the memory maps)."""
    train = data.split == TRAIN
    out = []
    for k in range(store.num_layers):
        X = np.asarray(store.layer(k)[data.rows], np.float32)
        out.append(standardize(X, train))
    return out


def aligned_empty(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised array on fresh anonymous pages (page-aligned, so ``jax.device_put``
    shares its memory on CPU instead of copying it).

    ``np.empty`` asks the kernel for transparent huge pages for large arrays; where the kernel
    compacts memory to find them (THP ``defrag=madvise``, common), touching a few hundred MB for
    the first time took 0.1-1.7 s here, against a steady 0.3 s with ordinary pages."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    flags = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}   # anonymous
    return np.frombuffer(mmap.mmap(-1, nbytes, **flags), dtype,
                         int(np.prod(shape))).reshape(shape)


def load_concatenated(store: Store, data: TaskData, order: np.ndarray | None = None) -> np.ndarray:
    """Every layer standardised (train statistics) side by side: float32 [N_task, sum D_k],
    written layer by layer into one page-aligned array (no per-layer copies kept). Row ``i``
    is task row ``order[i]`` when ``order`` is given (a permutation of the task rows)."""
    rows, train = data.rows, data.split == TRAIN
    if order is not None:
        rows, train = rows[order], train[order]
    out = aligned_empty((len(rows), sum(store.dims)))
    o = 0
    every = np.array_equal(rows, np.arange(len(store)))
    for k in range(store.num_layers):
        arr = store.layer(k)
        X = np.asarray(arr if every else arr[rows], np.float32)
        standardize(X, train, out[:, o:o + X.shape[1]])
        o += X.shape[1]
    return out


def stack_padded(layers: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad layers to the widest: X [L, N, D_max] and feature mask [L, D_max]."""
    dmax = max(a.shape[1] for a in layers)
    X = np.zeros((len(layers), layers[0].shape[0], dmax), np.float32)
    mask = np.zeros((len(layers), dmax), np.float32)
    for k, a in enumerate(layers):
        X[k, :, :a.shape[1]] = a
        mask[k, :a.shape[1]] = 1
    return X, mask


def neuron_index(dims: list[int]) -> np.ndarray:
    """[sum D_k, 2] (layer, neuron) of each column of the concatenated representation."""
    return np.array([(k, j) for k, d in enumerate(dims) for j in range(d)], np.int64)
