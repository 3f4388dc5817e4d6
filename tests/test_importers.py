"""Corpus importers on small fixtures written in the real layouts (VoxCeleb1, Common Voice, ADI17,
folder-per-label, generic CSV / TSV / JSONL manifests), speaker-disjoint splits, clear errors, and
an imported manifest extracted end to end by experiments.extract."""
import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from speechinterp.corpus import adi17, common_voice, folders, manifest, voxceleb
from speechinterp.corpus.manifest import ManifestError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def speech():
    """A real spoken sentence (espeak-ng), 16 kHz float32."""
    import librosa

    from speechinterp.corpus import espeak
    wav = espeak.synthesize("Seven students argued politely about clouds.", "en-us+f2")
    x = librosa.resample(wav.astype(np.float32) / 32768.0, orig_sr=espeak.sample_rate(),
                         target_sr=16000)
    return x[:12000]


def write_audio(path, speech, k, sr=16000, fmt=None):
    """A distinct real clip per ``k`` (gain and offset vary), at ``sr``."""
    import librosa
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.roll(speech, 97 * k) * (0.4 + 0.05 * (k % 7))
    if sr != 16000:
        x = librosa.resample(x, orig_sr=16000, target_sr=sr)
    sf.write(path, x.astype(np.float32), sr, format=fmt)


def disjoint(rows):
    where = {}
    for r in rows:
        where.setdefault(r["speaker"], set()).add(r["split"])
    return all(len(s) == 1 for s in where.values())


# ----------------------------------------------------------------------------- VoxCeleb1
VOX_META = [("id10001", "A.J._Buckley", "m", "Ireland", "dev"),
            ("id10002", "Aaron_Tveit", "m", "USA", "dev"),
            ("id10003", "Aamir_Khan", "m", "India", "dev"),
            ("id10004", "Aaron_Yoo", "m", "USA", "dev"),
            ("id10005", "Abbie_Cornish", "f", "Australia", "dev"),
            ("id10006", "Abigail_Breslin", "f", "USA", "dev"),
            ("id10007", "Adele", "f", "UK", "dev"),
            ("id10008", "Adriana_Lima", "f", "Brazil", "dev"),
            ("id10270", "Eartha_Kitt", "f", "USA", "test"),
            ("id10271", "Ed_Westwick", "m", "UK", "test"),
            ("id10999", "Not_Downloaded", "m", "USA", "dev")]


@pytest.fixture(scope="module")
def vox_root(tmp_path_factory, speech):
    d = tmp_path_factory.mktemp("vox1")
    with open(d / "vox1_meta.csv", "w") as f:    # tab-separated, as in the release
        f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n")
        for row in VOX_META:
            f.write("\t".join(row) + "\n")
    k = 0
    for spk, *_ in VOX_META[:-1]:
        for video in ("1zcIwhmdeo4", "7w0IBEWc9Qw"):
            for n in (1, 2):
                write_audio(str(d / "wav" / spk / video / f"{n:05d}.wav"), speech, k)
                k += 1
    write_audio(str(d / "wav" / "id19999" / "abc" / "00001.wav"), speech, 0)   # not in meta
    return str(d)


def test_voxceleb1_labels_splits_and_missing(vox_root):
    res = voxceleb.import_voxceleb1(vox_root, seed=3)
    rows = res.rows
    assert len(rows) == 10 * 4
    r = next(r for r in rows if r["speaker"] == "id10001")
    assert (r["gender"], r["accent"], r["name"]) == ("male", "Ireland", "A.J._Buckley")
    assert r["utt_id"].startswith("id10001/") and r["video"] in ("1zcIwhmdeo4", "7w0IBEWc9Qw")
    assert {r["gender"] for r in rows if r["speaker"] == "id10005"} == {"female"}
    # the release's test set is the test split; dev speakers go to train / dev
    assert {r["speaker"] for r in rows if r["split"] == "test"} == {"id10270", "id10271"}
    assert {r["split"] for r in rows if r["vox1_set"] == "dev"} == {"train", "dev"}
    assert disjoint(rows)
    reasons = dict(res.skipped)
    assert any("id10999" in p and "missing on disk" in w for p, w in reasons.items())
    assert any("id19999" in p and "not listed" in w for p, w in reasons.items())
    assert voxceleb.import_voxceleb1(vox_root, seed=3).rows == rows      # deterministic
    other = voxceleb.import_voxceleb1(vox_root, seed=4).rows
    assert [r["utt_id"] for r in other] == [r["utt_id"] for r in rows]


def test_voxceleb1_one_set_only(tmp_path, speech):
    """A tree with only the release's test set (40 speakers) is split here, speaker-disjointly."""
    with open(tmp_path / "vox1_meta.csv", "w") as f:
        f.write("VoxCeleb1 ID , VGGFace1 ID , Gender , Nationality , Set\n")   # padded, commas
        for i in range(6):
            f.write(f"id1027{i} , Name_{i} , {'mf'[i % 2]} , USA , test\n")
            write_audio(str(tmp_path / "vox1_test_wav" / "wav" / f"id1027{i}" / "v" / "00001.wav"),
                        speech, i)
    rows = voxceleb.import_voxceleb1(str(tmp_path)).rows
    assert len(rows) == 6 and {r["split"] for r in rows} == {"train", "dev", "test"}
    assert {r["gender"] for r in rows} == {"male", "female"} and rows[0]["accent"] == "USA"


def test_voxceleb1_meta_errors(tmp_path, vox_root):
    bad = tmp_path / "vox1_meta.csv"
    bad.write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tSet\nid10001\tA\tm\tdev\n")
    with pytest.raises(ManifestError, match=r"vox1_meta.csv: lacks column\(s\) \['Nationality'\]"):
        voxceleb.import_voxceleb1(vox_root, meta=str(bad))
    bad.write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                   "id10001\tA\tx\tIreland\tdev\n")
    with pytest.raises(ManifestError, match=r"vox1_meta.csv:2: gender 'x' is not m or f"):
        voxceleb.import_voxceleb1(vox_root, meta=str(bad))
    with pytest.raises(ManifestError, match="no VoxCeleb1 speaker folders"):
        voxceleb.import_voxceleb1(str(tmp_path), meta=os.path.join(vox_root, "vox1_meta.csv"))


# ----------------------------------------------------------------------------- Common Voice
CV_OLD = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent",
          "locale", "segment"]
CV_NEW = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents",
          "variant", "locale", "segment"]


def write_tsv(path, cols, rows):
    with open(path, "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(r.get(c, "") for c in cols) + "\n")


@pytest.fixture(scope="module")
def cv_root(tmp_path_factory, speech):
    d = tmp_path_factory.mktemp("cv")
    k = 0
    # "en": a newer release (accents, male_masculine / female_feminine), with split files
    genders_en = ["male_masculine", "female_feminine", "", "do_not_wish_to_say", "male_masculine",
                  "female_feminine", "male_masculine", "female_feminine"]
    rows = []
    for s, g in enumerate(genders_en):
        for u in range(3):
            name = f"common_voice_en_{s}{u}.mp3"
            rows.append({"client_id": f"c{s:02d}" + "ab" * 8, "path": name, "gender": g,
                         "sentence": 'He said "hello" twice.', "accents": "United States English"
                         if s % 2 else "England English|Scottish English", "age": "twenties",
                         "locale": "en", "up_votes": "2", "down_votes": "0"})
            write_audio(str(d / "en" / "clips" / name), speech, k, sr=48000, fmt="MP3")
            k += 1
    rows.append({"client_id": "c00" + "ab" * 8, "path": "common_voice_en_missing.mp3",
                 "gender": "male_masculine", "locale": "en"})
    write_tsv(d / "en" / "validated.tsv", CV_NEW, rows)
    write_tsv(d / "en" / "train.tsv", CV_NEW, [rows[0], rows[3]])    # speakers c00, c01
    write_tsv(d / "en" / "test.tsv", CV_NEW, [rows[6]])              # speaker c02
    # "fr": an older release (accent, male / female)
    rows = []
    for s in range(6):
        name = f"common_voice_fr_{s}.mp3"
        rows.append({"client_id": f"f{s:02d}", "path": name, "gender": ["male", "female"][s % 2],
                     "accent": "france" if s < 3 else "", "locale": "fr", "sentence": "Bonjour."})
        write_audio(str(d / "fr" / "clips" / name), speech, k, sr=48000, fmt="MP3")
        k += 1
    write_tsv(d / "fr" / "validated.tsv", CV_OLD, rows)
    return str(d)


def test_common_voice_labels_and_splits(cv_root):
    res = common_voice.import_common_voice(cv_root, seed=1)
    rows = res.rows
    assert len(rows) == 24 + 6 and {r["language"] for r in rows} == {"en", "fr"}
    en = [r for r in rows if r["language"] == "en"]
    by_spk = {r["speaker"]: r for r in en}
    assert by_spk["c00" + "ab" * 8]["gender"] == "male"
    assert by_spk["c01" + "ab" * 8]["gender"] == "female"
    assert by_spk["c02" + "ab" * 8]["gender"] == "" and by_spk["c03" + "ab" * 8]["gender"] == ""
    assert by_spk["c01" + "ab" * 8]["accent"] == "United States English"
    assert en[0]["text"] == 'He said "hello" twice.' and en[0]["locale"] == "en"
    fr = {r["speaker"]: r for r in rows if r["language"] == "fr"}
    assert fr["f00"]["gender"] == "male" and fr["f01"]["gender"] == "female"
    assert fr["f00"]["accent"] == "france" and fr["f05"]["accent"] == ""
    # the release's split files fix their speakers; the rest are split speaker-disjointly
    assert by_spk["c00" + "ab" * 8]["split"] == "train" == by_spk["c01" + "ab" * 8]["split"]
    assert by_spk["c02" + "ab" * 8]["split"] == "test"
    assert disjoint(rows) and {r["split"] for r in rows} == {"train", "dev", "test"}
    assert len(res.skipped) == 1 and "common_voice_en_missing.mp3" in res.skipped[0][0]
    assert "validated.tsv line 26 but missing on disk" in res.skipped[0][1]
    # one language folder as the root: the language is the folder's name
    only = common_voice.import_common_voice(os.path.join(cv_root, "fr"), seed=1).rows
    assert len(only) == 6 and {r["language"] for r in only} == {"fr"}
    assert r"fr/common_voice_fr_0" in {r["utt_id"] for r in only}


def test_common_voice_errors(tmp_path):
    with pytest.raises(ManifestError, match="no validated.tsv"):
        common_voice.import_common_voice(str(tmp_path))
    (tmp_path / "de").mkdir()
    write_tsv(tmp_path / "de" / "validated.tsv", ["client", "path"], [{"client": "a", "path": "x"}])
    with pytest.raises(ManifestError, match=r"de/validated.tsv: lacks column\(s\) \['client_id'\]"):
        common_voice.import_common_voice(str(tmp_path))
    (tmp_path / "de" / "validated.tsv").write_text("client_id\tpath\ta\tb\tc\n")
    with open(tmp_path / "de" / "validated.tsv", "a") as f:
        f.write("x\ty.mp3\t1\n")
    with pytest.raises(ManifestError, match=r"de/validated.tsv:2: 3 fields, the header has 5"):
        common_voice.import_common_voice(str(tmp_path))


# ----------------------------------------------------------------------------- ADI17
def test_adi17_dialect_folders(tmp_path, speech):
    k = 0
    for dialect in ("EGY", "SUD", "LEB", "KSA", "MOR"):
        for v in range(4):
            for seg in range(2):
                name = f"vid{dialect}{v}_{seg:06d}-{seg + 1:06d}.wav"
                write_audio(str(tmp_path / dialect / name), speech, k)
                k += 1
    (tmp_path / "notes").mkdir()
    res = adi17.import_adi17(str(tmp_path), seed=0)
    rows = res.rows
    assert len(rows) == 40
    r = next(r for r in rows if r["dialect"] == "SUD")
    assert r["region"] == "nile_basin" and r["language"] == "ar"
    assert r["video"] == r["speaker"] and r["video"].startswith("vidSUD")
    assert {r["region"] for r in rows if r["dialect"] in ("EGY",)} == {"nile_basin"}
    assert {r["region"] for r in rows} == {"nile_basin", "levantine", "gulf", "maghrebi"}
    assert disjoint(rows)
    for d in ("EGY", "SUD", "LEB", "KSA", "MOR"):   # stratified: every dialect in every split
        assert {r["split"] for r in rows if r["dialect"] == d} == {"train", "dev", "test"}
    assert any("notes" in p and "neither an ADI17 dialect" in w for p, w in res.skipped)
    assert adi17.import_adi17(str(tmp_path), seed=0).rows == rows
    assert adi17.import_adi17(str(tmp_path), seed=5).rows != rows


def test_adi17_release_split_and_utt2lang(tmp_path, speech):
    for split in ("train", "test"):
        for dialect in ("EGY", "ALG"):
            for v in range(3):
                name = f"{split}{dialect}{v}_000001-000002.wav"
                write_audio(str(tmp_path / split / dialect / name), speech, v)
    dev = tmp_path / "dev"
    write_audio(str(dev / "wav" / "devA_000010-000020.wav"), speech, 1)
    write_audio(str(dev / "wav" / "devB_000010-000020.wav"), speech, 2)
    (dev / "utt2lang").write_text("devA_000010-000020 EGY\ndevB_000010-000020 alg\n"
                                  "devC_000010-000020 EGY\n")
    res = adi17.import_adi17(str(tmp_path))
    rows = res.rows
    split = {r["video"]: r["split"] for r in rows}
    assert split["devA"] == "dev" and split["devB"] == "dev" and split["testEGY1"] == "test"
    assert {r["dialect"] for r in rows if r["split"] == "dev"} == {"EGY", "ALG"}
    assert {split[f"trainEGY{v}"] for v in range(3)} == {"train"}
    assert len(res.skipped) == 1 and "devC" in res.skipped[0][0]
    (dev / "utt2lang").write_text("devA_000010-000020 XXX\n")
    with pytest.raises(ManifestError, match=r"dev/utt2lang:1: unknown dialect 'XXX'"):
        adi17.import_adi17(str(tmp_path))


# ----------------------------------------------------------------------------- folders
def test_folder_per_label(tmp_path, speech):
    k = 0
    for emo in ("angry", "calm"):
        for spk in ("s1", "s2", "s3", "s4"):
            for n in range(2):
                write_audio(str(tmp_path / emo / spk / "take" / f"{n}.flac"), speech, k,
                            fmt="FLAC")
                k += 1
    (tmp_path / "empty").mkdir()
    write_audio(str(tmp_path / "loose.wav"), speech, 0)
    res = folders.import_folders(str(tmp_path), label="emotion", speaker_level=1, seed=2)
    rows = res.rows
    assert len(rows) == 16 and {r["emotion"] for r in rows} == {"angry", "calm"}
    assert rows[0]["utt_id"] == "angry/s1/take/0" and rows[0]["speaker"] == "s1"
    assert disjoint(rows)
    for emo in ("angry", "calm"):
        assert {r["split"] for r in rows if r["emotion"] == emo} == {"train", "dev", "test"}
    assert {os.path.basename(p) for p, _ in res.skipped} == {"empty", "loose.wav"}
    assert not res.notes
    flat = folders.import_folders(str(tmp_path), label="emotion")   # no speakers
    assert "speaker" not in flat.rows[0] and len(flat.rows) == 16
    assert "split is by utterance" in flat.notes[0]
    with pytest.raises(ManifestError, match="speaker_level must be 0"):
        folders.import_folders(str(tmp_path), label="emotion", speaker_level=-1)
    with pytest.raises(ManifestError, match="reserved"):
        folders.import_folders(str(tmp_path), label="split")


# ----------------------------------------------------------------------------- manifests
@pytest.fixture
def wav_dir(tmp_path, speech):
    for i in range(12):
        write_audio(str(tmp_path / "audio" / f"u{i}.wav"), speech, i)
    return tmp_path


def generic_rows():
    return [{"wav_file": f"audio/u{i}.wav", "spk": f"p{i // 2}", "sex": "mf"[i // 2 % 2],
             "note": f"n{i}"} for i in range(12)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_generic_manifest_formats_and_mapping(wav_dir, fmt):
    path = str(wav_dir / f"m.{fmt}")
    rows = generic_rows()
    if fmt == "jsonl":
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    got = manifest.read_manifest(path, {"path": "wav_file", "speaker": "spk", "gender": "sex"})
    assert got[3] == {"path": str(wav_dir / "audio" / "u3.wav"), "speaker": "p1", "gender": "f",
                      "note": "n3", "utt_id": "audio/u3"}
    res = manifest.import_manifest(path, {"path": "wav_file", "speaker": "spk"}, seed=0,
                                   stratify="sex")
    assert disjoint(res.rows) and {r["split"] for r in res.rows} == {"train", "dev", "test"}


def test_manifest_errors_name_the_file(wav_dir):
    p = wav_dir / "m.csv"
    p.write_text("wav_file,spk\naudio/u0.wav,a\n")
    with pytest.raises(ManifestError, match=r"m.csv: manifest lacks column\(s\) \['path'\]"):
        manifest.read_manifest(str(p))
    with pytest.raises(ManifestError, match=r"m.csv: column mapping names column\(s\) the file "
                                            r"lacks: speaker='speaker_id'"):
        manifest.read_manifest(str(p), {"path": "wav_file", "speaker": "speaker_id"})
    p.write_text("path,spk\naudio/u0.wav,a\naudio/u1.wav,b,extra\n")
    with pytest.raises(ManifestError, match=r"m.csv:3: 3 fields, the header has 2"):
        manifest.read_manifest(str(p))
    p.write_text("utt_id,path\nx,audio/u0.wav\nx,audio/u1.wav\n")
    with pytest.raises(ManifestError, match=r"m.csv: utt_id 'x' repeats \(lines 2 and 3\)"):
        manifest.read_manifest(str(p))
    j = wav_dir / "m.jsonl"
    j.write_text('{"path": "audio/u0.wav"}\n[1, 2]\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: expected a JSON object"):
        manifest.read_manifest(str(j))
    j.write_text('{"path": "audio/u0.wav"}\n{"path": \n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        manifest.read_manifest(str(j))
    with pytest.raises(ManifestError, match="cannot tell the manifest format"):
        manifest.read_manifest(str(wav_dir / "m.xlsx"))
    with pytest.raises(ManifestError, match="not of the form our=theirs"):
        manifest.parse_columns("path:wav")


def test_read_manifest_options_of_extraction_and_training(tmp_path):
    """The options its callers need: label filtering and required columns (train_encoder), the
    paths and ids as written (extract), a CSV fallback for other extensions, and every row
    without a needed value in one message."""
    p = tmp_path / "m.list"
    p.write_text("utt_id,path,accent,split\na,w/a.wav,x,train\nb,/abs/b.wav,,dev\n"
                 "c,./w/../w/c.wav, y ,test\n")
    with pytest.raises(ManifestError, match="cannot tell the manifest format"):
        manifest.read_manifest(str(p))
    rows = manifest.read_manifest(str(p), label="accent", fallback_fmt="csv")
    assert [r["utt_id"] for r in rows] == ["a", "c"] and rows[1]["accent"] == "y"
    assert rows[0]["path"] == str(tmp_path / "w" / "a.wav")
    assert rows[1]["path"] == str(tmp_path / "w" / "c.wav")        # normalised
    kept = manifest.read_manifest(str(p), resolve_paths=False, make_ids=False, fallback_fmt="csv")
    assert [r["path"] for r in kept] == ["w/a.wav", "/abs/b.wav", "./w/../w/c.wav"]
    assert list(kept[0]) == ["utt_id", "path", "accent", "split"]
    with pytest.raises(ManifestError, match=r"m.list: manifest lacks column\(s\) \['gender'\]; "
                                            r"it has \['utt_id', 'path', 'accent', 'split'\]$"):
        manifest.read_manifest(str(p), label="gender", fallback_fmt="csv")
    # an empty utt_id: made from the path by default, an error where ids are not made
    q = tmp_path / "m.csv"
    q.write_text("utt_id,path\n,w/a.wav\nb,\n,\n")
    with pytest.raises(ManifestError, match=r"m.csv: 2 row\(s\) without a needed value: "
                                            r"line 3: empty path; line 4: empty path$"):
        manifest.read_manifest(str(q))
    with pytest.raises(ManifestError, match=r"m.csv: 3 row\(s\) without a needed value: "
                                            r"line 2: empty utt_id; line 3: empty path; "
                                            r"line 4: empty utt_id and path$"):
        manifest.read_manifest(str(q), make_ids=False)
    q.write_text("utt_id,path\n,w/a.wav\n")
    assert manifest.read_manifest(str(q))[0]["utt_id"] == "w/a"
    q.write_text("utt_id,spk\n,s1\n")
    with pytest.raises(ManifestError, match="line 2: no utt_id and no path to make one from"):
        manifest.read_manifest(str(q), required=())


def test_missing_files_skipped_and_own_split_kept(wav_dir):
    p = wav_dir / "m.csv"
    rows = [{"utt_id": f"u{i}", "path": f"audio/u{i}.wav", "speaker": f"p{i // 3}",
             "split": ["train", "train", "dev", "test"][i // 3]} for i in range(12)]
    rows.append({"utt_id": "gone", "path": "audio/gone.wav", "speaker": "p9", "split": "test"})
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = manifest.import_manifest(str(p))
    assert [r["split"] for r in res.rows] == [r["split"] for r in rows[:12]]
    assert res.skipped == [(str(wav_dir / "audio" / "gone.wav"),
                            f"listed in {p} but missing on disk")]
    rows[0]["split"] = "test"      # speaker p0 now in train and test
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ManifestError, match=r"speaker 'p0' is in splits \['test', 'train'\]"):
        manifest.import_manifest(str(p))
    assert disjoint(manifest.import_manifest(str(p), resplit=True).rows)


def test_speaker_disjoint_split_properties():
    rng = np.random.default_rng(0)
    rows = [{"utt_id": f"u{i}", "speaker": f"s{rng.integers(40)}",
             "accent": "abcd"[i % 4]} for i in range(600)]
    for r in rows:    # each speaker has one accent
        r["accent"] = "abcd"[int(r["speaker"][1:]) % 4]
    a = manifest.speaker_disjoint_split(rows, (0.8, 0.1, 0.1), seed=7, stratify="accent")
    assert a == manifest.speaker_disjoint_split(rows, (0.8, 0.1, 0.1), 7, "accent")
    assert a != manifest.speaker_disjoint_split(rows, (0.8, 0.1, 0.1), 8, "accent")
    assert disjoint(a) and rows[0].get("split") is None   # the input is not modified
    for acc in "abcd":
        spk = {s: {r["split"] for r in a if r["speaker"] == s and r["accent"] == acc}
               for s in {r["speaker"] for r in a if r["accent"] == acc}}
        n = [sum(1 for v in spk.values() if v == {s}) for s in manifest.SPLITS]
        assert n[1] >= 1 and n[2] >= 1 and n[0] >= n[1] + n[2]
    small = [{"utt_id": f"u{i}", "speaker": f"s{i}", "lab": f"L{i // 2}"} for i in range(60)]
    n = Counter(r["split"] for r in manifest.speaker_disjoint_split(small, seed=0,
                                                                   stratify="lab"))
    assert n == {"train": 30, "test": 30}   # 30 strata of 2 speakers: each reaches test
    two = manifest.speaker_disjoint_split(rows, (0.9, 0.1, 0.0), 0)
    assert {r["split"] for r in two} == {"train", "dev"}
    with pytest.raises(ManifestError, match="fractions must be three non-negative"):
        manifest.speaker_disjoint_split(rows, (0.8, 0.2))


# ----------------------------------------------------------------------------- end to end
def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True)


def test_import_script(vox_root, tmp_path):
    """experiments.import_corpus: counts per split and label, skipped files, errors."""
    out = str(tmp_path / "vox.csv")
    r = run("experiments.import_corpus", "--format=voxceleb1", f"--root={vox_root}",
            f"--out={out}", "--seed=1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "40 utterances" in r.stdout and "(2 skipped)" in r.stdout
    assert re.search(r"test +8 utterances, 2 speakers; gender: female: 4, male: 4", r.stdout)
    assert "missing on disk" in r.stdout
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert list(written[0])[:6] == ["utt_id", "path", "split", "speaker", "gender", "accent"]
    assert all(os.path.isabs(w["path"]) for w in written)   # data is outside the manifest folder
    assert written == [{k: str(v) for k, v in r_.items()} for r_ in
                       voxceleb.import_voxceleb1(vox_root, seed=1).rows]
    bad = run("experiments.import_corpus", "--format=manifest", f"--root={out}",
              f"--out={tmp_path / 'x.csv'}", "--columns=path=nope")
    assert bad.returncode != 0 and "column(s) the file lacks: path='nope'" in bad.stderr


def test_common_voice_import_then_extract(cv_root, tmp_path):
    """experiments.extract reads an imported manifest end to end (48 kHz MP3 clips, decoded and
    resampled; labels and splits copied to the store)."""
    from speechinterp import checkpoint, store
    from speechinterp.encoders.cnn import CNNEncoder

    out = str(tmp_path / "cv" / "manifest.csv")
    r = run("experiments.import_corpus", "--format=common_voice", f"--root={cv_root}",
            f"--out={out}", "--label=language")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "30 utterances" in r.stdout and "common_voice_en_missing.mp3" in r.stdout
    enc = str(tmp_path / "cnn_tiny")
    checkpoint.save_encoder(enc, CNNEncoder.from_preset("tiny", seed=0))
    st = str(tmp_path / "store")
    r = run("experiments.extract", f"--encoder={enc}", f"--manifest={out}", f"--out={st}",
            "--batch_size=16")
    assert r.returncode == 0, r.stderr[-2000:]
    s = store.open_store(st)
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert len(s) == 30 and set(s.column("language")) == {"en", "fr"}
    for col in ("utt_id", "split", "speaker", "gender", "accent"):
        assert s.column(col) == [w[col] for w in written]
    assert np.all(np.isfinite(s.layer(0))) and np.std(s.layer(0), axis=0).max() > 0


def test_write_manifest_relative_paths(wav_dir):
    rows = [{"utt_id": "a", "path": str(wav_dir / "audio" / "u0.wav"), "gender": "f",
             "speaker": "p", "extra": 1, "split": "train"}]
    out = manifest.write_manifest(rows, str(wav_dir / "m.csv"))
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert got == [{"utt_id": "a", "path": "audio/u0.wav", "split": "train", "speaker": "p",
                    "gender": "f", "extra": "1"}]
    assert manifest.read_manifest(out)[0]["path"] == rows[0]["path"]
