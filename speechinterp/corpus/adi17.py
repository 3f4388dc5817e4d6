"""ADI17 importer: Arabic dialect folders (``EGY/*.wav`` or ``train/EGY/*.wav``).

ADI17 (Shon et al., 2020; the MGB-5 dialect identification track) labels YouTube speech with 17
country-level dialects. Files are named ``<youtube id>_<start>-<end>.wav``. Accepted layouts:

- ``root/<DIALECT>/**/*.wav``: split speaker-disjointly here, stratified by dialect;
- ``root/<split>/<DIALECT>/**/*.wav`` with ``<split>`` one of train / dev / test (or
  ``train_segments``, ``dev_segments``, ``test_segments``, ``valid``, ``validation``): the
  release's own split;
- ``root/<split>/`` holding the audio and a Kaldi-style ``utt2lang`` (``<utt id> <DIALECT>`` per
  line, audio ``<utt id>.wav`` anywhere below): the layout of the dev / test lists.

ADI17 has no speaker labels: the source video is the grouping unit (``video``, also written as
``speaker`` so that splits never share a video). Rows get dialect, region, language (``ar``).
"""
from __future__ import annotations

import os
import re

from speechinterp.corpus.manifest import (AUDIO_EXTENSIONS, Imported, ManifestError,
                                          check_speaker_disjoint, speaker_disjoint_split)
from speechinterp.corpus.splits import DEFAULT_FRACTIONS

DIALECTS = ("ALG", "EGY", "IRA", "JOR", "KSA", "KUW", "LEB", "LIB", "MAU", "MOR", "OMA", "PAL",
            "QAT", "SUD", "SYR", "UAE", "YEM")
REGION = {
    "ALG": "maghrebi", "LIB": "maghrebi", "MAU": "maghrebi", "MOR": "maghrebi",
    "EGY": "nile_basin", "SUD": "nile_basin",
    "JOR": "levantine", "LEB": "levantine", "PAL": "levantine", "SYR": "levantine",
    "IRA": "gulf", "KSA": "gulf", "KUW": "gulf", "OMA": "gulf", "QAT": "gulf", "UAE": "gulf",
    "YEM": "gulf",
}
SPLIT_DIRS = {"train": "train", "train_segments": "train", "dev": "dev", "dev_segments": "dev",
              "valid": "dev", "validation": "dev", "test": "test", "test_segments": "test"}
_SEGMENT = re.compile(r"^(?P<video>.+)_\d+-\d+$")


def video_of(stem: str) -> str:
    """The YouTube id of ``<youtube id>_<start>-<end>`` (the stem itself if not so named)."""
    m = _SEGMENT.match(stem)
    return m.group("video") if m else stem


def _audio_below(folder: str) -> list[str]:
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out += [os.path.join(dirpath, f) for f in sorted(files)
                if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return out


def _row(path: str, dialect: str, split: str | None, root: str) -> dict:
    stem = os.path.splitext(os.path.basename(path))[0]
    video = video_of(stem)
    rel = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
    r = {"utt_id": rel, "path": path, "speaker": video, "language": "ar", "dialect": dialect,
         "region": REGION[dialect], "video": video}
    if split:
        r["split"] = split
    return r


def _dialect_dirs(folder: str) -> list[str]:
    return [d for d in sorted(os.listdir(folder))
            if d.upper() in DIALECTS and os.path.isdir(os.path.join(folder, d))]


def _from_utt2lang(folder: str, split: str, root: str) -> tuple[list[dict], list]:
    listing = os.path.join(folder, "utt2lang")
    audio = {os.path.splitext(os.path.basename(p))[0]: p for p in _audio_below(folder)}
    rows, skipped = [], []
    with open(listing, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ManifestError(f"{listing}:{n}: expected '<utt id> <DIALECT>', got "
                                    f"{line.strip()!r}")
            utt, dialect = parts[0], parts[1].upper()
            if dialect not in DIALECTS:
                raise ManifestError(f"{listing}:{n}: unknown dialect {parts[1]!r}; ADI17 has "
                                    f"{list(DIALECTS)}")
            if utt not in audio:
                skipped.append((os.path.join(folder, utt + ".wav"),
                                f"listed in {listing} line {n} but missing on disk"))
                continue
            rows.append(_row(audio[utt], dialect, split, root))
    return rows, skipped


def import_adi17(root: str, fractions=DEFAULT_FRACTIONS, seed: int = 0) -> Imported:
    """Rows for an ADI17 tree (see the module docstring). Folders that are neither a dialect
    nor a split are returned as skipped; so are files a ``utt2lang`` lists but that are absent."""
    if not os.path.isdir(root):
        raise ManifestError(f"{root}: not a folder")
    rows, skipped = [], []
    top = _dialect_dirs(root)
    splits = [d for d in sorted(os.listdir(root))
              if d in SPLIT_DIRS and os.path.isdir(os.path.join(root, d))]
    if top:
        for d in top:
            rows += [_row(p, d.upper(), None, root) for p in _audio_below(os.path.join(root, d))]
    for d in splits:
        folder = os.path.join(root, d)
        if os.path.isfile(os.path.join(folder, "utt2lang")):
            got, miss = _from_utt2lang(folder, SPLIT_DIRS[d], root)
            rows += got
            skipped += miss
            continue
        dialects = _dialect_dirs(folder)
        if not dialects:
            skipped.append((folder, "split folder with neither dialect folders nor utt2lang"))
        for dd in dialects:
            rows += [_row(p, dd.upper(), SPLIT_DIRS[d], root)
                     for p in _audio_below(os.path.join(folder, dd))]
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if os.path.isdir(p) and d not in splits and d not in top:
            skipped.append((p, f"folder is neither an ADI17 dialect {list(DIALECTS)} nor a "
                               f"split {sorted(SPLIT_DIRS)}"))
    if not rows:
        raise ManifestError(f"{root}: no ADI17 audio: expected <DIALECT>/*.wav or "
                            f"<split>/<DIALECT>/*.wav with DIALECT in {list(DIALECTS)}")
    have = {r.get("split") for r in rows}
    if not top and {"train", "test"} <= have:
        try:
            check_speaker_disjoint(rows, root)
        except ManifestError as e:
            skipped.append((root, f"release split not video-disjoint ({e}); splitting here"))
            top = True
    if top or not {"train", "test"} <= have:
        # no usable release split (or dialect folders outside one): split by video here
        rows = speaker_disjoint_split(rows, fractions, seed, "dialect")
    elif "dev" not in have:   # train + test only: deal some training videos to dev
        train = [r for r in rows if r["split"] == "train"]
        dev = {r["utt_id"]: r["split"] for r in
               speaker_disjoint_split(train, (fractions[0], fractions[1], 0.0), seed, "dialect")}
        rows = [{**r, "split": dev.get(r["utt_id"], r["split"])} for r in rows]
    return Imported(rows, skipped)
