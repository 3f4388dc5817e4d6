"""Folder-per-label importer: ``root/<label>/**/*.wav`` (any audio format in
``manifest.AUDIO_EXTENSIONS``).

The first folder level is the label, written to the column ``label`` names (``emotion``,
``accent``, ...). With ``speaker_level=1`` the next folder level names the speaker
(``root/<label>/<speaker>/**``), and the split is speaker-disjoint; otherwise every file is its
own group. Splits are stratified by the label.
"""
from __future__ import annotations

import os

from speechinterp.corpus.manifest import (AUDIO_EXTENSIONS, Imported, ManifestError,
                                          speaker_disjoint_split)
from speechinterp.corpus.splits import DEFAULT_FRACTIONS


def import_folders(root: str, label: str = "label", speaker_level: int = 0,
                   fractions=DEFAULT_FRACTIONS, seed: int = 0) -> Imported:
    """Rows for every audio file below the label folders of ``root``. Files directly in
    ``root`` and label folders without audio are returned as skipped."""
    if not os.path.isdir(root):
        raise ManifestError(f"{root}: not a folder")
    if not label or label in ("utt_id", "path", "split", "speaker"):
        raise ManifestError(f"label column name {label!r} is empty or reserved")
    if speaker_level < 0:
        raise ManifestError(f"speaker_level must be 0 (no speakers) or a folder depth >= 1, "
                            f"got {speaker_level}")
    rows, skipped = [], []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                skipped.append((d, "audio directly in the root has no label folder"))
            continue
        found = 0
        for dirpath, dirnames, files in os.walk(d):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, d)
            parts = [] if rel_dir == "." else rel_dir.split(os.sep)
            for fn in sorted(files):
                if os.path.splitext(fn)[1].lower() not in AUDIO_EXTENSIONS:
                    continue
                p = os.path.join(dirpath, fn)
                row = {"utt_id": os.path.splitext(os.path.relpath(p, root))[0]
                       .replace(os.sep, "/"), "path": p, label: name}
                if speaker_level:
                    if len(parts) < speaker_level:
                        skipped.append((p, f"no speaker folder at depth {speaker_level} "
                                           f"below the label folder"))
                        continue
                    row["speaker"] = parts[speaker_level - 1]
                rows.append(row)
                found += 1
        if not found:
            skipped.append((d, "label folder without audio files"))
    if not rows:
        raise ManifestError(f"{root}: no audio files in label folders (<label>/**/*.wav; "
                            f"extensions {list(AUDIO_EXTENSIONS)})")
    notes = [] if speaker_level else [
        f"{root}: no speaker folders (speaker_level=0): the split is by utterance, so one "
        f"speaker's files can be in train and test; pass speaker_level=1 (--speaker_level=1) "
        f"if <label>/<speaker>/ folders name the speakers"]
    return Imported(speaker_disjoint_split(rows, fractions, seed, label), skipped, notes)
