"""The representation store (docs/formats.md): one directory per encoder x manifest.

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
SPLITS = ("train", "dev", "test")
_CHECK_BYTES = 1 << 26   # finiteness is checked in blocks of rows of about this size


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


def read_csv_rows(path: str, with_lines: bool = False) -> list[dict]:
    """Rows of a CSV with a header; a row with more or fewer fields than the header raises
    :class:`StoreError` naming the file and line (``with_lines``: rows carry ``__line__``)."""
    rows = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return rows
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise StoreError(f"{path}:{reader.line_num}: {len(fields)} fields, the header "
                                 f"has {len(header)}")
            row = dict(zip(header, fields))
            if with_lines:
                row["__line__"] = reader.line_num
            rows.append(row)
    return rows


def check_splits(rows: Sequence[dict], source: str, column: str = "split") -> None:
    """Every ``split`` cell is train / dev / test, or every cell is empty (no split); else raise
    :class:`StoreError` naming the file, the lines and the values. Rows may carry ``__line__``."""
    if not rows or column not in rows[0]:
        return
    where = lambda i, r: r.get("__line__", i + 2)
    bad = [(where(i, r), r[column]) for i, r in enumerate(rows)
           if (r.get(column) or "") not in SPLITS + ("",)]
    empty = [where(i, r) for i, r in enumerate(rows) if not (r.get(column) or "")]
    if bad:
        shown = ", ".join(f"line {n}: {v!r}" for n, v in bad[:10])
        raise StoreError(f"{source}: {len(bad)} row(s) with an unknown {column} value "
                         f"({shown}{' ...' if len(bad) > 10 else ''}); expected one of "
                         f"{list(SPLITS)}")
    if empty and len(empty) != len(rows):
        raise StoreError(f"{source}: {len(empty)} of {len(rows)} rows have an empty {column} "
                         f"(lines {', '.join(map(str, empty[:10]))}"
                         f"{' ...' if len(empty) > 10 else ''}); fill every {column} cell or "
                         f"none")


def check_finite(arr: np.ndarray, what: str = "array", block_bytes: int = _CHECK_BYTES
                 ) -> tuple[int, int, int] | None:
    """None if every value of the 2-D ``arr`` (a memory map is fine) is finite, else
    (first bad row, bad rows, bad cells); read in blocks of rows, one float64 sum per block."""
    n = arr.shape[0]
    step = max(1, block_bytes // max(1, arr.shape[1] * arr.dtype.itemsize))
    first, rows_bad, cells_bad = None, 0, 0
    for i in range(0, n, step):
        blk = np.asarray(arr[i:i + step])
        if np.isfinite(np.add.reduce(blk, axis=None, dtype=np.float64)):
            continue
        fin = np.isfinite(blk)
        bad_rows = np.flatnonzero(~fin.all(axis=1))
        if bad_rows.size:
            first = i + int(bad_rows[0]) if first is None else first
            rows_bad += int(bad_rows.size)
            cells_bad += int(fin.size - np.count_nonzero(fin))
    return None if first is None else (first, rows_bad, cells_bad)


def _manifest_digest(encoder: str, layers, rows: Sequence[dict], dtype: str,
                     inputs: dict | None = None) -> str:
    head = [encoder, [list(l) for l in layers], dtype]
    if inputs:   # only when given, so stores written without them keep their digest
        head.append({k: inputs[k] for k in sorted(inputs)})
    h = hashlib.sha256(json.dumps(head).encode())
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

    def layer(self, k: int | str) -> np.ndarray:
        """Layer ``k`` (an index or a layer name) as a read-only memory map [N, D_k]."""
        if isinstance(k, str):
            if k not in self.layer_names:
                raise StoreError(f"store {self.path} has no layer {k!r}; layers: "
                                 f"{self.layer_names}")
            k = self.layer_names.index(k)
        return np.load(os.path.join(self.path, f"layer_{k}.npy"), mmap_mode="r")

    def column(self, name: str) -> list[str]:
        if self.utterances and name not in self.utterances[0]:
            raise StoreError(f"{self.path}/utterances.csv has no column {name!r}; "
                             f"columns: {list(self.utterances[0])}")
        return [r.get(name) or "" for r in self.utterances]

    def has_column(self, name: str) -> bool:
        return bool(self.utterances) and name in self.utterances[0]


def _check_meta(path: str, meta) -> None:
    if not isinstance(meta, dict):
        raise StoreError(f"store {path}: meta.json is not a JSON object")
    for key in ("version", "encoder", "pooling", "layers"):
        if key not in meta:
            raise StoreError(f"store {path}: meta.json lacks key {key!r}")
    if meta["version"] != VERSION:
        raise StoreError(f"store {path}: meta.json version {meta['version']} != {VERSION}")
    if not isinstance(meta["layers"], list):
        raise StoreError(f"store {path}: meta.json 'layers' is not a list")
    bad = []
    for k, layer in enumerate(meta["layers"]):
        if not isinstance(layer, dict):
            bad.append(f"layers[{k}] is not an object")
            continue
        for key in ("name", "dim"):
            if key not in layer:
                bad.append(f"layers[{k}] ({layer.get('name', '?')!r}) lacks {key!r}")
        dim = layer.get("dim")
        if "dim" in layer and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            bad.append(f"layers[{k}] ({layer.get('name', '?')!r}) has dim {dim!r}, "
                       f"not a positive integer")
    if "dtype" in meta and meta["dtype"] not in _DTYPES:
        bad.append(f"dtype {meta['dtype']!r} is not one of {list(_DTYPES)}")
    if bad:
        raise StoreError(f"store {path}: meta.json has {len(bad)} problem(s): "
                         + "; ".join(bad[:20]) + (" ..." if len(bad) > 20 else ""))


def validate(path: str, check_values: bool = True) -> Store:
    """Open and check a store: meta.json, utterances.csv (fields per line, unique utt_ids, split
    values), files present, row counts, dims and dtypes agree with meta, and (``check_values``)
    every value finite, read from the memory maps in blocks."""
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
    _check_meta(path, meta)
    csv_path = os.path.join(path, "utterances.csv")
    if not os.path.exists(csv_path):
        raise StoreError(f"store {path}: missing utterances.csv")
    rows = read_csv_rows(csv_path, with_lines=True)
    if rows and not {"utt_id", "path"} <= set(rows[0]):
        raise StoreError(f"store {path}: utterances.csv needs columns utt_id and path, "
                         f"has {[c for c in rows[0] if c != '__line__']}")
    seen: dict[str, int] = {}
    for r in rows:
        if r["utt_id"] in seen:
            raise StoreError(f"store {path}: utterances.csv repeats utt_id {r['utt_id']!r} "
                             f"(lines {seen[r['utt_id']]} and {r['__line__']})")
        seen[r["utt_id"]] = r["__line__"]
    check_splits(rows, csv_path)
    for r in rows:
        del r["__line__"]
    arrays = []
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
        if "dtype" in meta and arr.dtype.name != meta["dtype"]:
            raise StoreError(f"store {path}: layer_{k}.npy has dtype {arr.dtype} but meta.json "
                             f"says {meta['dtype']}")
        arrays.append(arr)
    extra = sorted(f for f in os.listdir(path) if f.startswith("layer_") and f.endswith(".npy")
                   and f not in {f"layer_{k}.npy" for k in range(len(meta["layers"]))})
    if extra:
        raise StoreError(f"store {path}: files {extra} are not listed in meta.json")
    if check_values:
        bad = []
        for k, (layer, arr) in enumerate(zip(meta["layers"], arrays)):
            hit = check_finite(arr)
            if hit:
                first, nrows, ncells = hit
                bad.append(f"layer_{k}.npy (layer {layer['name']!r}): {ncells} cell(s) in "
                           f"{nrows} row(s), first at row {first} "
                           f"(utt_id {rows[first]['utt_id']!r})")
        if bad:
            raise StoreError(f"store {path}: non-finite values (NaN/inf) in {len(bad)} "
                             f"layer(s): " + "; ".join(bad))
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
                 utterances: Sequence[dict], dtype: str = "float32", extra_meta: dict | None = None,
                 inputs: dict | None = None):
        """``inputs``: other things the vectors depend on (e.g. ``{"masks": sha256}``), part of
        the digest that decides whether a store or an unfinished extraction is this job's."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        self.out_dir, self.encoder_name, self.dtype = out_dir, encoder_name, dtype
        self.layers = [(str(n), int(d)) for n, d in layers]
        self.utterances = list(utterances)
        first: dict[str, int] = {}
        for i, r in enumerate(self.utterances):   # found now, not after all the work
            u = str(r.get("utt_id"))
            if u in first:
                raise StoreError(f"{out_dir}: utt_id {u!r} repeats (manifest rows {first[u]} "
                                 f"and {i}); utt_ids must be unique")
            first[u] = i
        self.inputs = dict(inputs or {})
        self.extra_meta = {**dict(extra_meta or {}), **({"inputs": self.inputs} if self.inputs
                                                        else {})}
        self.partial = os.path.join(out_dir, ".partial")
        digest = self.digest = _manifest_digest(encoder_name, self.layers, self.utterances, dtype,
                                                self.inputs)
        meta_path = os.path.join(out_dir, "meta.json")
        self.finished = False
        if os.path.exists(meta_path) and not os.path.isdir(self.partial):
            with open(meta_path) as f:
                old = json.load(f)
            if old.get("digest") != digest:
                raise StoreError(f"{out_dir}: a finished store of another "
                                 f"{self._what_differs(old)} is there; choose another --out")
            self.finished = True
            return
        os.makedirs(self.partial, exist_ok=True)
        stamp = os.path.join(self.partial, "job.json")
        if os.path.exists(stamp):
            with open(stamp) as f:
                old = json.load(f)
            if old.get("digest") != digest:
                raise StoreError(
                    f"{out_dir}: an unfinished extraction with a different "
                    f"{self._what_differs(old)} is there; remove {self.partial} or choose "
                    f"another --out")
        else:
            _atomic_write_bytes(stamp, json.dumps(
                {"digest": digest, "encoder": encoder_name,
                 "layers": [{"name": n, "dim": d} for n, d in self.layers], "dtype": dtype,
                 "inputs": self.inputs}).encode())
        self._drop_stray_chunks()

    def _what_differs(self, old: dict) -> str:
        """Which of encoder, layers, dtype, inputs differ from ``old`` (a meta.json or job
        stamp), else 'manifest'."""
        new = {"encoder": self.encoder_name, "dtype": self.dtype, "inputs": self.inputs,
               "layers": [{"name": n, "dim": d} for n, d in self.layers]}
        if "encoder" not in old:   # an old job stamp holds only the digest
            return "encoder, layers, dtype, inputs (masks) or manifest"
        diff = [k if k != "inputs" else "inputs (" + ", ".join(sorted(
            set(old.get("inputs") or {}) | set(self.inputs))) + ")"
            for k in ("encoder", "layers", "dtype", "inputs") if old.get(k, {} if k == "inputs"
                                                                    else None) != new[k]]
        return " and ".join(diff) if diff else "manifest"

    def _drop_stray_chunks(self) -> None:
        """Remove committed chunks after a gap (a lost chunk): they are written again."""
        end = 0
        for a, b, f in self._chunks():
            if a == end:
                end = b
            else:
                os.remove(f)

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
        if self.finished:
            raise StoreError(f"{self.out_dir}: store is already finished; nothing more can be "
                             f"written to it")
        skipped = sorted(int(s) for s in skipped)
        if len(arrays) != len(self.layers):
            raise StoreError(f"chunk has {len(arrays)} layers, store has {len(self.layers)}")
        n = int(np.shape(arrays[0])[0]) if len(arrays) else 0
        stop = start_row + n + len(skipped)
        if stop > len(self.utterances) or any(not start_row <= s < stop for s in skipped):
            raise StoreError(f"chunk rows [{start_row}, {stop}) outside the manifest "
                             f"({len(self.utterances)} rows) or skipped rows outside it")
        done = self.done_rows()
        if start_row != done:
            raise StoreError(f"{self.out_dir}: chunk starts at row {start_row} but rows are "
                             f"written up to {done}; chunks must follow each other")
        payload = {"skipped": np.asarray(skipped, np.int64)}
        for k, ((name, dim), a) in enumerate(zip(self.layers, arrays)):
            a = np.asarray(a)
            if a.shape != (n, dim):
                raise StoreError(f"chunk layer {name!r} has shape {a.shape}, expected ({n}, {dim})")
            if not np.all(np.isfinite(a)):
                bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
                raise StoreError(f"chunk rows [{start_row}, {stop}) layer {name!r} has "
                                 f"non-finite values in {bad.size} vector(s), the first the "
                                 f"chunk's vector {int(bad[0])}")
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
        chunks, end = [], 0
        for a, b, f in self._chunks():   # the contiguous run from row 0 only
            if a != end:
                break
            chunks.append(np.load(f))
            end = b
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
