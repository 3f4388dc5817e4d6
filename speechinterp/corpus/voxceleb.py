"""VoxCeleb1 importer: ``vox1_meta.csv`` + ``wav/idXXXXX/<youtube id>/NNNNN.wav``.

The metadata file of the VoxCeleb1 release (Nagrani et al., 2017) is tab-separated despite its
name, with the header ``VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set``; some mirrors pad
the fields with spaces or use commas, both accepted. ``Gender`` is ``m`` / ``f``; ``Set`` is the
speaker-disjoint verification split: ``dev`` (1,211 speakers) or ``test`` (40 speakers). Rows get
speaker (the VoxCeleb1 id), name, gender (male / female), accent (the nationality), video and
split: ``test`` speakers are the test split and ``dev`` speakers are dealt to train / dev
(speaker-disjoint, stratified by gender).
"""
from __future__ import annotations

import csv
import os

from speechinterp.corpus.manifest import (AUDIO_EXTENSIONS, Imported, ManifestError,
                                          speaker_disjoint_split)
from speechinterp.corpus.splits import DEFAULT_FRACTIONS

META_NAME = "vox1_meta.csv"
META_COLUMNS = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
GENDERS = {"m": "male", "f": "female", "male": "male", "female": "female"}
# where the release's archives put the speaker folders, relative to the root
WAV_DIRS = ("wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", "dev/wav", "test/wav",
            "vox1_dev_wav", "vox1_test_wav")


def read_meta(path: str) -> dict[str, dict]:
    """{VoxCeleb1 id: {"name", "gender", "nationality", "set"}} from ``vox1_meta.csv``."""
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: VoxCeleb1 metadata not found (expected {META_NAME} with "
                            f"columns {list(META_COLUMNS)})")
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    first = text.splitlines()[0] if text.strip() else ""
    delim = "\t" if "\t" in first else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in META_COLUMNS if c not in header]
    if missing:
        raise ManifestError(f"{path}: lacks column(s) {missing}; header is {header} "
                            f"(expected {list(META_COLUMNS)}, tab-separated)")
    idx = {c: header.index(c) for c in META_COLUMNS}
    out = {}
    for n, fields in enumerate(reader, 2):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) < len(header):
            raise ManifestError(f"{path}:{n}: {len(fields)} fields, the header has "
                                f"{len(header)}: {fields}")
        get = {c: fields[i].strip() for c, i in idx.items()}
        gender = GENDERS.get(get["Gender"].lower())
        if gender is None:
            raise ManifestError(f"{path}:{n}: gender {get['Gender']!r} is not m or f")
        if get["Set"] not in ("dev", "test"):
            raise ManifestError(f"{path}:{n}: Set {get['Set']!r} is not dev or test")
        out[get["VoxCeleb1 ID"]] = {"name": get["VGGFace1 ID"], "gender": gender,
                                    "nationality": get["Nationality"], "set": get["Set"]}
    if not out:
        raise ManifestError(f"{path}: no speakers listed")
    return out


def speaker_folders(root: str) -> dict[str, str]:
    """{speaker id: folder} for every ``id*`` folder under the known wav folders of ``root``."""
    found: dict[str, str] = {}
    for sub in WAV_DIRS:
        d = os.path.join(root, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if name.startswith("id") and os.path.isdir(p):
                found.setdefault(name, p)
    return found


def import_voxceleb1(root: str, meta: str | None = None, fractions=DEFAULT_FRACTIONS,
                     seed: int = 0) -> Imported:
    """Rows for every utterance of a VoxCeleb1 tree (see the module docstring).

    ``fractions`` deal the ``dev`` speakers to train and dev (its first two numbers); the test
    split is the release's ``test`` set. When the tree holds only one of the two sets, all its
    speakers are split with ``fractions``. Speakers in the metadata without audio, and audio
    folders of speakers not in it, are returned as skipped."""
    meta_path = meta or os.path.join(root, META_NAME)
    info = read_meta(meta_path)
    folders = speaker_folders(root)
    if not folders:
        raise ManifestError(f"{root}: no VoxCeleb1 speaker folders (id*/) under any of "
                            f"{list(WAV_DIRS)}")
    rows, skipped = [], []
    for spk in sorted(info):
        if spk not in folders:
            skipped.append((os.path.join(root, "wav", spk),
                            f"speaker listed in {meta_path} but missing on disk"))
    for spk, folder in sorted(folders.items()):
        if spk not in info:
            skipped.append((folder, f"speaker folder not listed in {meta_path}"))
            continue
        m = info[spk]
        for dirpath, dirnames, files in os.walk(folder):
            dirnames.sort()
            for fn in sorted(files):
                if os.path.splitext(fn)[1].lower() not in AUDIO_EXTENSIONS:
                    continue
                p = os.path.join(dirpath, fn)
                rel = os.path.relpath(p, folder)
                video = rel.split(os.sep)[0] if os.sep in rel else ""
                rows.append({"utt_id": f"{spk}/{os.path.splitext(rel)[0]}".replace(os.sep, "/"),
                             "path": p, "speaker": spk, "gender": m["gender"],
                             "accent": m["nationality"], "name": m["name"], "video": video,
                             "vox1_set": m["set"]})
    if not rows:
        raise ManifestError(f"{root}: no audio files in the speaker folders of {meta_path}")
    sets = {r["vox1_set"] for r in rows}
    if sets == {"dev", "test"}:
        dev = [r for r in rows if r["vox1_set"] == "dev"]
        dev = speaker_disjoint_split(dev, (fractions[0], fractions[1], 0.0), seed, "gender")
        split = {r["utt_id"]: r["split"] for r in dev}
        rows = [{**r, "split": split.get(r["utt_id"], "test")} for r in rows]
    else:
        rows = speaker_disjoint_split(rows, fractions, seed, "gender")
    return Imported(rows, skipped)
