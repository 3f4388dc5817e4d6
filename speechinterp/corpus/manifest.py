"""Manifests: read a CSV / TSV / JSONL table with a column mapping, write the manifest CSV that
``experiments.extract`` reads, and split speaker-disjointly into train / dev / test.

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
def table_format(path: str, fmt: str | None = None) -> str:
    """``csv``, ``tsv`` or ``jsonl``: ``fmt`` if given, else from the file name's extension."""
    if fmt:
        if fmt not in FORMATS:
            raise ManifestError(f"{path}: unknown manifest format {fmt!r}; known: {FORMATS}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    known = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl"}
    if ext not in known:
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
                  required: Iterable[str] = ("path",), check_split: bool = True) -> list[dict]:
    """Rows of a CSV / TSV / JSONL manifest under our column names.

    ``columns`` maps our names to the file's (``{"path": "wav_file", "speaker": "spk"}``);
    unmapped file columns keep their own names. ``path`` is made absolute (relative paths are
    relative to the manifest's folder). A missing ``utt_id`` is made from the path. Raises
    :class:`ManifestError` naming the file for a missing mapped or ``required`` column, an empty
    path, a repeated utt_id (with its lines) or (``check_split``) a split value other than
    train / dev / test (an all-empty split column is no split)."""
    columns = dict(columns or {})
    cols, raw = read_table(path, fmt)
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
        hint = " (map them with columns={'path': 'your_column'}, or --columns=path=your_column)"
        raise ManifestError(f"{path}: manifest lacks column(s) {missing}; it has {cols}{hint}")
    root = os.path.dirname(os.path.abspath(path))
    rows = []
    for r in raw:
        line = r.pop("__line__")
        row = {}
        for c, v in r.items():
            ours = rename.get(c, c)
            if ours in row and c not in rename:   # a mapped column wins over a same-named one
                continue
            row[ours] = v
        if "path" in row:
            if not row["path"]:
                raise ManifestError(f"{path}:{line}: empty path")
            if not os.path.isabs(row["path"]):
                row["path"] = os.path.normpath(os.path.join(root, row["path"]))
        if not row.get("utt_id"):
            if "path" not in row:
                raise ManifestError(f"{path}:{line}: no utt_id and no path to make one from")
            rel = os.path.relpath(row["path"], root)
            rel = row["path"].lstrip(os.sep) if _outside(rel) else rel
            row["utt_id"] = os.path.splitext(rel)[0].replace(os.sep, "/")
        row["__line__"] = line
        rows.append(row)
    check_unique_ids(rows, path)
    if check_split:
        check_splits(rows, path)
    for row in rows:
        del row["__line__"]
    return rows


def _outside(rel: str) -> bool:
    return rel == os.pardir or rel.startswith(os.pardir + os.sep)


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


def check_rows(rows: Sequence[dict], source: str) -> None:
    """Validate manifest rows before any work: non-empty utt_id and path, unique utt_ids, split
    values (see :func:`check_splits`); all problems in one :class:`ManifestError`."""
    problems = []
    for i, r in enumerate(rows):
        where = f"line {r.get('__line__', i + 2)}"
        empty = [c for c in ("utt_id", "path") if not (r.get(c) or "").strip()]
        if empty:
            problems.append(f"{where}: empty {' and '.join(empty)}")
    if problems:
        raise ManifestError(f"{source}: {len(problems)} row(s) without a needed value: "
                            + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    check_unique_ids(rows, source)
    check_splits(rows, source)


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
