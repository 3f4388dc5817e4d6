"""A task's inputs for the probe engine: standardised features, in memory or streamed.

:class:`Features` is X [N, K]: every layer of a store standardised with the train rows'
statistics, side by side, rows in the engine's order (the training rows first, then the rows
the probes are evaluated on). :class:`InMemory` holds it as one page-aligned array;
:class:`Streamed` reads rows from the store's layer files on demand (``preadv``; nothing is
memory-mapped), so host memory is bounded by the reads, not by the store (docs/design.md,
"stores larger than memory").
:class:`TaskArrays` is everything the protocol's stages need about one task.
"""
from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from speechinterp.probes import data as D
from speechinterp.store import Store


def npy_layout(path: str) -> tuple[int, tuple, np.dtype]:
    """(byte offset of the data, shape, dtype) of a C-order ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path}: a Fortran-order array; stores are written C-order")
        return f.tell(), shape, dtype


def read_rows(path: str, rows: np.ndarray, layout=None) -> np.ndarray:
    """Rows ``rows`` (ascending) of a 2-D ``.npy`` file, read with ``preadv`` into one array:
    one read per run of consecutive rows, and no page of the file mapped into this process
    (a memory map's pages would count towards its resident memory)."""
    offset, shape, dtype = npy_layout(path) if layout is None else layout
    rows = np.asarray(rows, np.int64)
    out = np.empty((len(rows), shape[1]), dtype)
    if not len(rows):
        return out
    row_bytes = shape[1] * dtype.itemsize
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    fd = os.open(path, os.O_RDONLY)
    try:
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            view = memoryview(out[a:b]).cast("B")
            got = os.preadv(fd, [view], offset + int(rows[a]) * row_bytes)
            if got != len(view):
                raise OSError(f"{path}: short read at row {int(rows[a])}")
    finally:
        os.close(fd)
    return out


def take_columns(X: np.ndarray, idx: np.ndarray, threads: int = 2) -> np.ndarray:
    """Columns ``idx`` of X into a page-aligned array (:func:`~.data.aligned_empty`), rows
    split over ``threads`` threads (numpy releases the GIL while it copies)."""
    out = D.aligned_empty((X.shape[0], len(idx)), X.dtype)
    if threads < 2 or X.shape[0] < 2 * threads:
        return np.take(X, idx, axis=1, out=out, mode="clip")
    parts = np.array_split(np.arange(X.shape[0]), threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda r: np.take(X[r[0]:r[-1] + 1], idx, axis=1,
                                        out=out[r[0]:r[-1] + 1], mode="clip"), parts))
    return out


def _layer_path(store: Store, k: int) -> str:
    return os.path.join(store.path, f"layer_{k}.npy")


class Features:
    """X [N, K], rows in the engine's order. ``rows(r)`` reads rows as float32 [len(r), K];
    ``columns(c)`` is X[:, c] (ranking order, random subsets)."""

    shape: tuple[int, int]
    in_memory: bool

    def rows(self, r: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def columns(self, c: np.ndarray) -> "Features":
        raise NotImplementedError


@dataclasses.dataclass
class InMemory(Features):
    """X held in one page-aligned float32 array (``jax.device_put`` shares it on CPU)."""

    array: np.ndarray
    in_memory = True

    @property
    def shape(self):
        return self.array.shape

    def rows(self, r):
        return self.array[r]

    def columns(self, c):
        return InMemory(take_columns(self.array, np.asarray(c)))


@dataclasses.dataclass
class Streamed(Features):
    """X read from the store's layer files, ``store_rows[i]`` being the store row of row i;
    each layer standardised with ``stats`` (per layer mean, std of the train rows), the
    columns ``cols`` of the concatenated layers (all when None)."""

    store: Store
    store_rows: np.ndarray
    stats: list
    cols: np.ndarray | None = None
    chunk_bytes: int = 64 << 20     # the most bytes of features one read returns
    in_memory = False

    def chunks(self, rows: np.ndarray):
        """``rows`` in consecutive pieces of at most :attr:`chunk_bytes` of features."""
        step = max(1, self.chunk_bytes // (4 * max(self.shape[1], sum(self.store.dims))))
        for a in range(0, len(rows), step):
            yield rows[a:a + step]

    @property
    def shape(self):
        k = sum(self.store.dims) if self.cols is None else len(self.cols)
        return (len(self.store_rows), k)

    def rows(self, r):
        r = np.asarray(r)
        src = self.store_rows[r]
        order = np.argsort(src, kind="stable")   # read in file order
        out = np.empty((len(r), sum(self.store.dims)), np.float32)
        o = 0
        for k, (mu, sd) in enumerate(self.stats):
            block = read_rows(_layer_path(self.store, k), src[order]).astype(np.float32)
            d = block.shape[1]
            block -= mu
            block /= sd
            out[order, o:o + d] = block
            o += d
        return out if self.cols is None else np.take(out, self.cols, axis=1)

    def columns(self, c):
        c = np.asarray(c)
        return dataclasses.replace(self, cols=c if self.cols is None else self.cols[c])


def streamed_stats(store: Store, rows: np.ndarray, chunk_bytes: int = 64 << 20) -> list:
    """Per-layer mean and std (float32, std 1 where constant, as :func:`~.data.standardize`)
    over store rows ``rows``, read chunk by chunk (float64 sums: 4x the chunk at most)."""
    rows = np.sort(rows)
    stats = []
    for k in range(store.num_layers):
        path = _layer_path(store, k)
        layout = npy_layout(path)
        d = layout[1][1]
        step = max(1, chunk_bytes // (16 * d))
        s, ss = np.zeros(d), np.zeros(d)
        for i in range(0, len(rows), step):
            x = read_rows(path, rows[i:i + step], layout).astype(np.float64)
            s += x.sum(0)
            ss += (x * x).sum(0)
        mu = s / len(rows)
        sd = np.sqrt(np.maximum(ss / len(rows) - mu * mu, 0))
        stats.append((mu.astype(np.float32), np.where(sd > 1e-8, sd, 1).astype(np.float32)))
    return stats


@dataclasses.dataclass
class TaskArrays:
    """One task's probe inputs, rows in the engine's order: the ``num_train`` training rows
    first, then the evaluation rows (dev, test), each in store order.

    * ``X``: :class:`Features` [N, K], every layer standardised, side by side;
    * ``Y``: int32 [2, N], the task's labels and the control task's;
    * ``dev``, ``test``: bool masks over the evaluation rows (``X`` rows ``num_train:``);
    * ``test_clusters``: the speaker of each test row (the bootstrap's clusters), or None;
    * ``row_of``: the engine row of each task row (batch plans are drawn on the task order,
      so results do not depend on the reordering);
    * ``data``: the :class:`~.data.TaskData` (classes, splits, groups).
    """

    data: D.TaskData
    X: Features
    Y: np.ndarray
    num_train: int
    dev: np.ndarray
    test: np.ndarray
    test_clusters: np.ndarray | None
    row_of: np.ndarray
    dims: list
    names: list

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def y_eval(self) -> np.ndarray:
        return self.Y[0, self.num_train:]

    @property
    def y_test(self) -> np.ndarray:
        return self.y_eval[self.test]

    @property
    def test_rows(self) -> np.ndarray:
        """Engine rows of the test utterances."""
        return self.num_train + np.flatnonzero(self.test)



def engine_order(td: D.TaskData) -> tuple[np.ndarray, np.ndarray]:
    """The engine's row order of a task (training rows first, then the others, each in task
    order) and its inverse: (order, row_of) with ``row_of[order] = arange``."""
    order = np.argsort(td.split != D.TRAIN, kind="stable")
    row_of = np.empty(len(order), np.int32)
    row_of[order] = np.arange(len(order))
    return order, row_of


def streams(num_rows: int, num_cols: int, memory_budget_bytes: float | None) -> bool:
    """Whether a task's features are streamed: holding X twice (all layers, then in ranking
    order) would exceed the budget (None: never)."""
    return (memory_budget_bytes is not None
            and 2 * 4 * num_rows * num_cols > memory_budget_bytes)


def task_arrays(store: Store, td: D.TaskData, seed: int = 0,
                memory_budget_bytes: float | None = None) -> TaskArrays:
    """:class:`TaskArrays` for the task ``td`` (:func:`~.data.prepare_task`): X in memory, or
    :class:`Streamed` when X (held twice at most by the protocol: all layers, then in ranking
    order) would exceed ``memory_budget_bytes``."""
    train0 = td.split == D.TRAIN
    order, row_of = engine_order(td)
    y, split = td.y[order], td.split[order]
    ntr = int(train0.sum())
    ev_split = split[ntr:]
    ctrl = D.control_labels(td, seed)[order]
    if streams(len(order), sum(store.dims), memory_budget_bytes):
        # reads of a sixteenth of the budget: a few are alive at once (the batch being read
        # while one trains, an evaluation chunk and its copies)
        chunk = max(1 << 20, int(memory_budget_bytes // 16))
        X = Streamed(store, td.rows[order], streamed_stats(store, td.rows[train0], chunk),
                     chunk_bytes=chunk)
    else:
        X = InMemory(D.load_concatenated(store, td, order))
    clusters = td.groups[order][ntr:][ev_split == D.TEST] if td.groups is not None else None
    return TaskArrays(td, X, np.stack([y, ctrl]).astype(np.int32), ntr, ev_split == D.DEV,
                      ev_split == D.TEST, clusters, row_of, list(store.dims),
                      list(store.layer_names))
