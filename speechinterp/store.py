"""The representation store (DESIGN.md): one directory per encoder x manifest.

    meta.json        {"version": 1, "encoder": str, "pooling": "mean",
                      "layers": [{"name": str, "dim": int}, ...], "dtype": "float32"|"float16"}
    layer_<k>.npy    [N, D_k] float32 / float16, memory-mappable
    utterances.csv   one row per array row: utt_id, path, [split], property columns

``meta.json`` is written last and atomically: a directory without it is not a finished store.
Writing goes through :class:`StoreWriter`, which commits fixed chunks of manifest rows under
``.partial/`` (each file renamed into place only when complete) so an interrupted extraction
resumes from the last committed chunk and ends in the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from typing import Iterable, Sequence

import numpy as np

VERSION = 1
_DTYPES = ("float32", "float16")


class StoreError(ValueError):
    """A store is missing, incomplete or inconsistent; the message names the culprit."""


# ----------------------------------------------------------------------------- helpers
def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _csv_columns(rows: Sequence[dict]) -> list[str]:
    cols = ["utt_id", "path"]
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def _write_csv(path: str, rows: Sequence[dict]) -> None:
    cols = _csv_columns(rows)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="raise")
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in cols})
    os.replace(tmp, path)


def read_csv_rows(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _manifest_digest(encoder: str, layers, rows: Sequence[dict], dtype: str) -> str:
    h = hashlib.sha256(json.dumps([encoder, [list(l) for l in layers], dtype]).encode())
    for r in rows:
        h.update(str(r.get("utt_id")).encode() + b"\0" + str(r.get("path")).encode() + b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------------------- reading
@dataclasses.dataclass
class Store:
    """A finished store, opened read-only; layers are memory-mapped."""

    path: str
    meta: dict
    utterances: list[dict]

    @property
    def layer_names(self) -> list[str]:
        return [l["name"] for l in self.meta["layers"]]

    @property
    def dims(self) -> list[int]:
        return [int(l["dim"]) for l in self.meta["layers"]]

    @property
    def num_layers(self) -> int:
        return len(self.meta["layers"])

    def __len__(self) -> int:
        return len(self.utterances)

    def layer(self, k: int) -> np.ndarray:
        """Layer ``k`` as a read-only memory map [N, D_k]."""
        return np.load(os.path.join(self.path, f"layer_{k}.npy"), mmap_mode="r")

    def column(self, name: str) -> list[str]:
        if self.utterances and name not in self.utterances[0]:
            raise StoreError(f"{self.path}/utterances.csv has no column {name!r}; "
                             f"columns: {list(self.utterances[0])}")
        return [r.get(name) or "" for r in self.utterances]

    def has_column(self, name: str) -> bool:
        return bool(self.utterances) and name in self.utterances[0]


def validate(path: str) -> Store:
    """Open and check a store: files present, row counts, dims and dtypes agree with meta."""
    if not os.path.isdir(path):
        raise StoreError(f"store {path} does not exist")
    meta_path = os.path.join(path, "meta.json")
    if not os.path.exists(meta_path):
        hint = " (an unfinished extraction: rerun it to resume)" if os.path.isdir(
            os.path.join(path, ".partial")) else ""
        raise StoreError(f"store {path}: missing meta.json{hint}")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except ValueError as e:
        raise StoreError(f"store {path}: meta.json is not valid JSON ({e})") from e
    for key in ("version", "encoder", "pooling", "layers"):
        if key not in meta:
            raise StoreError(f"store {path}: meta.json lacks key {key!r}")
    if meta["version"] != VERSION:
        raise StoreError(f"store {path}: meta.json version {meta['version']} != {VERSION}")
    csv_path = os.path.join(path, "utterances.csv")
    if not os.path.exists(csv_path):
        raise StoreError(f"store {path}: missing utterances.csv")
    rows = read_csv_rows(csv_path)
    if rows and not {"utt_id", "path"} <= set(rows[0]):
        raise StoreError(f"store {path}: utterances.csv needs columns utt_id and path, "
                         f"has {list(rows[0])}")
    ids = [r["utt_id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise StoreError(f"store {path}: utterances.csv repeats utt_id {dup!r}")
    for k, layer in enumerate(meta["layers"]):
        f = os.path.join(path, f"layer_{k}.npy")
        if not os.path.exists(f):
            raise StoreError(f"store {path}: missing layer_{k}.npy (layer {layer['name']!r})")
        try:
            arr = np.load(f, mmap_mode="r")
        except ValueError as e:
            raise StoreError(f"store {path}: layer_{k}.npy is unreadable ({e})") from e
        if arr.ndim != 2:
            raise StoreError(f"store {path}: layer_{k}.npy has shape {arr.shape}, expected 2-D")
        if arr.shape[0] != len(rows):
            raise StoreError(f"store {path}: layer_{k}.npy has {arr.shape[0]} rows but "
                             f"utterances.csv has {len(rows)}")
        if arr.shape[1] != int(layer["dim"]):
            raise StoreError(f"store {path}: layer_{k}.npy has dim {arr.shape[1]} but meta.json "
                             f"says {layer['dim']} for layer {layer['name']!r}")
        if arr.dtype.name not in _DTYPES:
            raise StoreError(f"store {path}: layer_{k}.npy has dtype {arr.dtype}, "
                             f"expected one of {_DTYPES}")
    extra = sorted(f for f in os.listdir(path) if f.startswith("layer_") and f.endswith(".npy")
                   and f not in {f"layer_{k}.npy" for k in range(len(meta["layers"]))})
    if extra:
        raise StoreError(f"store {path}: files {extra} are not listed in meta.json")
    return Store(path=path, meta=meta, utterances=rows)


open_store = validate


# ----------------------------------------------------------------------------- writing
class StoreWriter:
    """Chunked, atomic, resumable writing of a store.

    ``utterances`` are the manifest rows in order. Each :meth:`write_chunk` call covers the next
    run of manifest rows: ``arrays`` (one [n, D_k] per layer) for the rows that produced vectors,
    ``skipped`` the manifest row indices in the chunk that did not (bad audio), so a chunk spans
    ``n + len(skipped)`` rows from ``start_row``.
    """

    def __init__(self, out_dir: str, encoder_name: str, layers: Sequence[tuple[str, int]],
                 utterances: Sequence[dict], dtype: str = "float32", extra_meta: dict | None = None):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.out_dir, self.encoder_name, self.dtype = out_dir, encoder_name, dtype
        self.layers = [(str(n), int(d)) for n, d in layers]
        self.utterances = list(utterances)
        self.extra_meta = dict(extra_meta or {})
        self.partial = os.path.join(out_dir, ".partial")
        digest = self.digest = _manifest_digest(encoder_name, self.layers, self.utterances, dtype)
        meta_path = os.path.join(out_dir, "meta.json")
        self.finished = False
        if os.path.exists(meta_path) and not os.path.isdir(self.partial):
            with open(meta_path) as f:
                if json.load(f).get("digest") != digest:
                    raise StoreError(f"{out_dir}: a finished store of another encoder, layers, "
                                     f"dtype or manifest is there; choose another --out")
            self.finished = True
            return
        os.makedirs(self.partial, exist_ok=True)
        stamp = os.path.join(self.partial, "job.json")
        if os.path.exists(stamp):
            with open(stamp) as f:
                old = json.load(f).get("digest")
            if old != digest:
                raise StoreError(
                    f"{out_dir}: an unfinished extraction with a different encoder, layers, dtype "
                    f"or manifest is there; remove {self.partial} or choose another --out")
        else:
            _atomic_write_bytes(stamp, json.dumps({"digest": digest}).encode())

    def _chunks(self) -> list[tuple[int, int, str]]:
        out = []
        for f in os.listdir(self.partial):
            if f.startswith("chunk_") and f.endswith(".npz"):
                a, b = f[6:-4].split("_")
                out.append((int(a), int(b), os.path.join(self.partial, f)))
        return sorted(out)

    def done_rows(self) -> int:
        """Manifest rows durably written: the end of the contiguous run of committed chunks."""
        if self.finished:
            return len(self.utterances)
        end = 0
        for a, b, _ in self._chunks():
            if a != end:
                break
            end = b
        return end

    def write_chunk(self, start_row: int, arrays: Sequence[np.ndarray],
                    skipped: Iterable[int] = ()) -> int:
        """Commit one chunk; returns the next manifest row to process."""
        skipped = sorted(int(s) for s in skipped)
        if len(arrays) != len(self.layers):
            raise StoreError(f"chunk has {len(arrays)} layers, store has {len(self.layers)}")
        n = int(np.shape(arrays[0])[0]) if len(arrays) else 0
        stop = start_row + n + len(skipped)
        if stop > len(self.utterances) or any(not start_row <= s < stop for s in skipped):
            raise StoreError(f"chunk rows [{start_row}, {stop}) outside the manifest "
                             f"({len(self.utterances)} rows) or skipped rows outside it")
        if self.finished:
            raise StoreError(f"{self.out_dir}: store is already finished")
        payload = {"skipped": np.asarray(skipped, np.int64)}
        for k, ((name, dim), a) in enumerate(zip(self.layers, arrays)):
            a = np.asarray(a)
            if a.shape != (n, dim):
                raise StoreError(f"chunk layer {name!r} has shape {a.shape}, expected ({n}, {dim})")
            if not np.all(np.isfinite(a)):
                raise StoreError(f"chunk rows [{start_row}, {stop}) layer {name!r} has "
                                 f"non-finite values")
            payload[f"layer_{k}"] = a.astype(self.dtype)
        final = os.path.join(self.partial, f"chunk_{start_row:09d}_{stop:09d}.npz")
        tmp = final + f".tmp{os.getpid()}.npz"
        np.savez(tmp, **payload)
        os.replace(tmp, final)
        return stop

    def skipped_rows(self) -> list[int]:
        out: list[int] = []
        for _, _, f in self._chunks():
            out.extend(np.load(f)["skipped"].tolist())
        return out

    def finalize(self) -> Store:
        """Assemble the chunks into the store (idempotent); meta.json is written last."""
        if self.finished:
            return validate(self.out_dir)
        if self.done_rows() != len(self.utterances):
            raise StoreError(f"{self.out_dir}: only {self.done_rows()} of "
                             f"{len(self.utterances)} rows written; cannot finalize")
        chunks = [np.load(f) for _, _, f in self._chunks()]
        skipped = set(int(s) for c in chunks for s in c["skipped"])
        meta_path = os.path.join(self.out_dir, "meta.json")
        if os.path.exists(meta_path):
            os.remove(meta_path)  # a stale finished store is being replaced
        for k, (_, dim) in enumerate(self.layers):
            parts = [c[f"layer_{k}"] for c in chunks]
            arr = np.concatenate(parts) if parts else np.zeros((0, dim), self.dtype)
            _atomic_save_npy(os.path.join(self.out_dir, f"layer_{k}.npy"), arr)
        kept = [r for i, r in enumerate(self.utterances) if i not in skipped]
        _write_csv(os.path.join(self.out_dir, "utterances.csv"), kept)
        meta = {"version": VERSION, "encoder": self.encoder_name, "pooling": "mean",
                "layers": [{"name": n, "dim": d} for n, d in self.layers], "dtype": self.dtype,
                "digest": self.digest, **self.extra_meta}
        _atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
        shutil.rmtree(self.partial)
        return validate(self.out_dir)


def write_store(out_dir: str, encoder_name: str, layer_names: Sequence[str],
                arrays: Sequence[np.ndarray], utterances: Sequence[dict],
                dtype: str = "float32", extra_meta: dict | None = None) -> Store:
    """Write a whole store at once (e.g. synthetic stores, tests)."""
    for f in (".partial", "meta.json"):  # overwrite whatever was there
        p = os.path.join(out_dir, f)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    layers = [(n, int(np.shape(a)[1])) for n, a in zip(layer_names, arrays)]
    w = StoreWriter(out_dir, encoder_name, layers, utterances, dtype, extra_meta)
    w.write_chunk(0, arrays)
    return w.finalize()
