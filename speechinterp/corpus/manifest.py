"""Manifests, their one owner: read a CSV / TSV / JSONL table with a column mapping (every reader
of a manifest, the importers, extraction and encoder training, goes through
:func:`read_manifest`), write the manifest CSV that ``experiments.extract`` reads, and split
speaker-disjointly into train / dev / test.

A manifest row is a dict of strings with at least ``utt_id`` and ``path`` (absolute, or relative
to the manifest's folder) and any property columns: ``split``, ``speaker``, ``gender``,
``language``, ``accent``, ``dialect``, ``region``, ``channel``, ... as in the built-in corpus's
``utterances.csv``. An empty cell is a missing label (the probes skip it).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import Counter
from typing import Iterable, Mapping, Sequence

from speechinterp.corpus import splits
from speechinterp.corpus.splits import DEFAULT_FRACTIONS, SPLITS
# column order of written manifests (any other column follows, in order of first appearance)
STANDARD_COLUMNS = ("utt_id", "path", "split", "speaker", "gender", "language", "accent",
                    "dialect", "region", "channel")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff",
                    ".au", ".sph", ".webm", ".wma")
FORMATS = ("csv", "tsv", "jsonl")


class ManifestError(ValueError):
    """A manifest or corpus layout cannot be read; the message names the file and the culprit."""


@dataclasses.dataclass
class Imported:
    """What an importer found: manifest ``rows``, the files it ``skipped`` (path, reason), and
    ``notes``: warnings about the result as a whole (e.g. a split by utterance)."""

    rows: list[dict]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def warnings(self) -> list[str]:
        return [f"{p}: {why}" for p, why in self.skipped]


# ----------------------------------------------------------------------------- reading
def table_format(path: str, fmt: str | None = None, fallback: str | None = None) -> str:
    """``csv``, ``tsv`` or ``jsonl``: ``fmt`` if given, else from the file name's extension,
    else ``fallback`` (None: an extension that names no format is a :class:`ManifestError`)."""
    if fmt:
        if fmt not in FORMATS:
            raise ManifestError(f"{path}: unknown manifest format {fmt!r}; known: {FORMATS}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    known = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl"}
    if ext not in known:
        if fallback:
            return table_format(path, fallback)
        raise ManifestError(f"{path}: cannot tell the manifest format from {ext!r}; "
                            f"name it .csv, .tsv or .jsonl or give the format ({FORMATS})")
    return known[ext]


def read_table(path: str, fmt: str | None = None, quoting: int = csv.QUOTE_MINIMAL
               ) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a CSV / TSV / JSONL file; every value a stripped string.

    Rows carry their 1-based source line as ``"__line__"``. A row with more or fewer fields than
    the header, or a JSONL line that is not a JSON object, raises :class:`ManifestError` naming
    the file and line."""
    fmt = table_format(path, fmt)
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: manifest not found")
    if fmt == "jsonl":
        rows, cols = [], []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{n}: not valid JSON ({e.msg})") from e
                if not isinstance(obj, dict):
                    raise ManifestError(f"{path}:{n}: expected a JSON object per line, "
                                        f"got {type(obj).__name__}")
                for k in obj:
                    if k not in cols:
                        cols.append(k)
                rows.append({**{k: _cell(v) for k, v in obj.items()}, "__line__": n})
        return cols, rows
    delim = "\t" if fmt == "tsv" else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delim, quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise ManifestError(f"{path}: empty manifest (no header line)")
        cols = [c.strip() for c in header]
        dup = [c for c, k in Counter(cols).items() if k > 1]
        if dup:
            raise ManifestError(f"{path}: header repeats column(s) {dup}")
        rows = []
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(cols):
                raise ManifestError(
                    f"{path}:{reader.line_num}: {len(fields)} fields, the header has "
                    f"{len(cols)} ({delim!r}-separated; is the delimiter right?)")
            rows.append({**{c: v.strip() for c, v in zip(cols, fields)},
                         "__line__": reader.line_num})
    return cols, rows


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v).strip()


def parse_columns(spec: str | Sequence[str] | None) -> dict[str, str]:
    """``"path=wav_file,speaker=spk"`` (or a list of ``our=theirs``) -> ``{"path": "wav_file",
    ...}``."""
    if not spec:
        return {}
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = {}
    for item in items:
        if not item.strip():
            continue
        if "=" not in item:
            raise ManifestError(f"column mapping {item!r} is not of the form our=theirs")
        ours, theirs = (s.strip() for s in item.split("=", 1))
        if not ours or not theirs:
            raise ManifestError(f"column mapping {item!r} is not of the form our=theirs")
        out[ours] = theirs
    return out


def read_manifest(path: str, columns: Mapping[str, str] | None = None, fmt: str | None = None,
                  required: Iterable[str] = ("path",), check_split: bool = True, *,
                  label: str | None = None, resolve_paths: bool = True, make_ids: bool = True,
                  fallback_fmt: str | None = None) -> list[dict]:
    """Rows of a CSV / TSV / JSONL manifest under our column names, checked before any work.

    The one reader of manifests: the importers, ``experiments.extract`` (``resolve_paths=False,
    make_ids=False``: the store keeps the manifest's own paths and ids) and
    ``speechinterp.train_encoder`` (``label=PROPERTY``) all read through it.

    Parameters
    ----------
    columns : our names -> the file's (``{"path": "wav_file", "speaker": "spk"}``); unmapped
        file columns keep their own names.
    fmt, fallback_fmt : the table format (:func:`table_format`); by default from the file name's
        extension, and ``fallback_fmt`` for an extension that names none (None: an error).
    required : columns the file must have (after the mapping).
    check_split : every ``split`` is train / dev / test, or every one is empty (no split).
    label : keep only the rows with a non-empty cell in this column (the labelled rows of a
        property); the column is required. The checks cover every row of the file.
    resolve_paths : make ``path`` absolute (a relative path is relative to the manifest's
        folder, normalised); False keeps it as written.
    make_ids : a missing or empty ``utt_id`` is made from the path (relative to the manifest's
        folder, without its extension); False: an empty utt_id is an error.

    Returns the rows in file order, every value a stripped string. Raises
    :class:`ManifestError` naming the file for a missing mapped or ``required`` column, every row
    with an empty path (or utt_id) with its line, a repeated utt_id (with its lines) or
    (``check_split``) a split value other than train / dev / test."""
    columns_given = columns is not None
    columns = dict(columns or {})
    required = list(required) + [c for c in (label, None if make_ids else "utt_id")
                                 if c and c not in required]
    cols, raw = read_table(path, table_format(path, fmt, fallback_fmt))
    if not raw:
        raise ManifestError(f"{path}: empty manifest (a header and no rows)")
    absent = {ours: theirs for ours, theirs in columns.items() if theirs not in cols}
    if absent:
        raise ManifestError(
            f"{path}: column mapping names column(s) the file lacks: "
            + ", ".join(f"{o}={t!r}" for o, t in absent.items()) + f"; the file has {cols}")
    rename = {theirs: ours for ours, theirs in columns.items()}
    have = {rename.get(c, c) for c in cols}
    missing = [c for c in required if c not in have]
    if missing:
        hint = (" (map them with columns={'path': 'your_column'}, or --columns=path=your_column)"
                if columns_given else "")
        raise ManifestError(f"{path}: manifest lacks column(s) {missing}; it has {cols}{hint}")
    rows = [_renamed(r, rename) for r in raw]
    check_values(rows, path, make_ids)
    root = os.path.dirname(os.path.abspath(path))
    for row in rows:
        full = _absolute(row.get("path"), root)
        if resolve_paths and full:
            row["path"] = full
        if make_ids and not row.get("utt_id"):
            rel = os.path.relpath(full, root)
            rel = full.lstrip(os.sep) if _outside(rel) else rel
            row["utt_id"] = os.path.splitext(rel)[0].replace(os.sep, "/")
    check_unique_ids(rows, path)
    if check_split:
        check_splits(rows, path)
    for row in rows:
        del row["__line__"]
    return [r for r in rows if r[label]] if label else rows


def _renamed(raw: dict, rename: Mapping[str, str]) -> dict:
    """A table row under our column names (a mapped column wins over a same-named one), with
    its ``__line__`` last."""
    line = raw["__line__"]
    row = {}
    for c, v in raw.items():
        if c == "__line__":
            continue
        ours = rename.get(c, c)
        if ours in row and c not in rename:
            continue
        row[ours] = v
    row["__line__"] = line
    return row


def _outside(rel: str) -> bool:
    return rel == os.pardir or rel.startswith(os.pardir + os.sep)


def _absolute(path: str | None, root: str) -> str | None:
    """``path`` made absolute: a relative one is relative to ``root``, normalised."""
    if path is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(root, path))


def check_unique_ids(rows: Sequence[dict], source: str) -> None:
    """Raise :class:`ManifestError` naming every repeated utt_id and where it occurs (source
    lines when the rows carry them, else row numbers)."""
    where: dict[str, list] = {}
    unit = "lines" if rows and "__line__" in rows[0] else "rows"
    for i, r in enumerate(rows):
        where.setdefault(r["utt_id"], []).append(r.get("__line__", i + 1))
    dup = [(u, w) for u, w in where.items() if len(w) > 1]
    if dup:
        shown = "; ".join(f"utt_id {u!r} repeats ({unit} {', '.join(map(str, w[:-1]))} and "
                          f"{w[-1]})" for u, w in dup[:10])
        more = f" ({len(dup)} repeated utt_ids)" if len(dup) > 1 else ""
        raise ManifestError(f"{source}: {shown}{' ...' if len(dup) > 10 else ''}{more}")


def check_splits(rows: Sequence[dict], source: str) -> None:
    """Every ``split`` cell is train / dev / test, or every one is empty (no split); else raise
    :class:`ManifestError` naming the lines and values (rows may carry ``__line__``)."""
    from speechinterp.store import StoreError
    from speechinterp.store import check_splits as _check
    try:
        _check(rows, source)
    except StoreError as e:
        raise ManifestError(str(e)) from None


def check_values(rows: Sequence[dict], source: str, make_ids: bool = True) -> None:
    """Every row has a non-empty path (where the rows have a ``path`` column) and utt_id (or,
    with ``make_ids``, a path to make one from); else one :class:`ManifestError` naming every
    such row's line (rows may carry ``__line__``)."""
    problems = []
    for i, r in enumerate(rows):
        where = f"line {r.get('__line__', i + 2)}"
        if make_ids and not r.get("utt_id") and "path" not in r:
            problems.append(f"{where}: no utt_id and no path to make one from")
            continue
        empty = [c for c in ("utt_id", "path")
                 if c in r and not r[c] and not (c == "utt_id" and make_ids)]
        if empty:
            problems.append(f"{where}: empty {' and '.join(empty)}")
    if problems:
        raise ManifestError(f"{source}: {len(problems)} row(s) without a needed value: "
                            + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))


def drop_missing_files(rows: Sequence[dict], source: str = "manifest"
                       ) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows whose file exists, [(path, reason)] for those that do not)."""
    kept, skipped = [], []
    for r in rows:
        if os.path.isfile(r["path"]):
            kept.append(r)
        else:
            skipped.append((r["path"], f"listed in {source} but missing on disk"))
    return kept, skipped


# ----------------------------------------------------------------------------- writing
def manifest_columns(rows: Sequence[dict]) -> list[str]:
    seen = []
    for r in rows:
        for k in r:
            if k not in seen:
                seen.append(k)
    std = [c for c in STANDARD_COLUMNS if c in seen]
    return std + [c for c in seen if c not in std]


def write_manifest(rows: Sequence[dict], path: str) -> str:
    """Write ``rows`` as the CSV that ``experiments.extract --manifest`` reads (atomically).

    Paths under the manifest's folder are written relative to it, others absolute."""
    if not rows:
        raise ManifestError(f"{path}: no rows to write")
    for i, r in enumerate(rows):
        if not r.get("utt_id") or not r.get("path"):
            raise ManifestError(f"{path}: row {i} lacks utt_id or path: {r}")
    check_unique_ids(rows, path)
    root = os.path.dirname(os.path.abspath(path))
    os.makedirs(root, exist_ok=True)
    cols = manifest_columns(rows)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            out = {c: "" if r.get(c) is None else r.get(c) for c in cols}
            p = os.path.abspath(out["path"])
            rel = os.path.relpath(p, root)
            out["path"] = p if _outside(rel) else rel
            w.writerow(out)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- splits
def speaker_disjoint_split(rows: Sequence[dict], fractions=DEFAULT_FRACTIONS, seed: int = 0,
                           stratify: str | Sequence[str] | None = None,
                           speaker: str = "speaker") -> list[dict]:
    """Copies of ``rows`` with ``split`` set so that no speaker is in two splits:
    :func:`speechinterp.corpus.splits.split_rows` (speakers grouped by their most common
    ``stratify`` label, or tuple of labels, and dealt per group in the proportions ``fractions``;
    rows with an empty ``speaker`` are their own group), invalid fractions a ManifestError."""
    try:
        return splits.split_rows(rows, fractions, seed, stratify, speaker=speaker)
    except splits.SplitError as e:
        raise ManifestError(str(e)) from None


def check_speaker_disjoint(rows: Sequence[dict], source: str = "manifest",
                           speaker: str = "speaker") -> None:
    """Raise :class:`ManifestError` naming a speaker that appears in two splits."""
    where: dict[str, set] = {}
    for r in rows:
        if r.get(speaker):
            where.setdefault(r[speaker], set()).add(r.get("split", ""))
    bad = {s: sorted(v) for s, v in where.items() if len(v) > 1}
    if bad:
        s = sorted(bad)[0]
        raise ManifestError(f"{source}: speaker {s!r} is in splits {bad[s]} "
                            f"({len(bad)} speaker(s) cross splits)")


def split_counts(rows: Sequence[dict], label: str | None = None) -> dict[str, Counter]:
    """{split: Counter(label value)} (or of the number of rows when ``label`` is None)."""
    out: dict[str, Counter] = {}
    for r in rows:
        out.setdefault(r.get("split", ""), Counter())[r.get(label, "") if label else "rows"] += 1
    return out


def import_manifest(path: str, columns: Mapping[str, str] | None = None, fmt: str | None = None,
                    fractions=DEFAULT_FRACTIONS, seed: int = 0, stratify: str | None = None,
                    resplit: bool = False) -> Imported:
    """A generic manifest as an importer: :func:`read_manifest`, listed files missing on disk
    skipped, and the manifest's own ``split`` kept when every row has train / dev / test and it is
    speaker-disjoint (an unknown or partly empty split is an error naming the lines; an empty or
    absent split column, or ``resplit``, gives a :func:`speaker_disjoint_split`)."""
    rows = read_manifest(path, columns, fmt, check_split=not resplit)
    if stratify and not any(stratify in r for r in rows):
        raise ManifestError(f"{path}: no column {stratify!r} to stratify the split by")
    rows, skipped = drop_missing_files(rows, path)
    if not rows:
        raise ManifestError(f"{path}: none of the listed files exists")
    if not resplit and all(r.get("split") for r in rows):
        check_speaker_disjoint(rows, path)
    else:
        rows = speaker_disjoint_split(rows, fractions, seed, stratify)
    return Imported(rows, skipped)
