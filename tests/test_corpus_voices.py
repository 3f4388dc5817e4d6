"""build_corpus --voices=flite,festival: missing programs are named; installed voices (here fake
`flite`, `festival` and `text2wave` programs that speak real espeak-ng audio) become extra
speakers through the same channels, and the espeak part stays byte-identical."""
import csv
import os
import stat
import subprocess
import sys

import pytest
import soundfile as sf

from speechinterp.corpus import builtin, external_tts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE = r'''#!{python}
"""Stand-in for {name}: lists voices like the real program and writes real speech (espeak-ng
audio made by the test for each sentence, at the voice's own rate)."""
import json, os, shutil, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.log"), "a") as f:
    f.write("{name} " + " ".join(args) + "\n")
def speak(text, voice, out):
    k = json.load(open(os.path.join(here, "texts.json")))[text]
    shutil.copy(os.path.join(here, "speech", f"{{voice}}_{{k}}.wav"), out)
if "{name}" == "flite":
    if args == ["-lv"]:
        print("Voices available: kal awb_time slt ")
    else:
        voice, text, out = (args[args.index(k) + 1] for k in ("-voice", "-t", "-o"))
        speak(text, voice, out)
elif "{name}" == "festival":
    print("(kal_diphone cmu_us_slt_arctic_hts)")
else:   # text2wave -o OUT -eval "(voice_NAME)" FILE
    out, ev, txt = args[args.index("-o") + 1], args[args.index("-eval") + 1], args[-1]
    speak(open(txt).read().strip(), ev.strip("()")[len("voice_"):], out)
'''
# the fake voices: espeak variant and the rate each "program" writes
FAKE_VOICES = {"kal": ("m3", 8000), "slt": ("f2", 16000), "kal_diphone": ("m1", 22050),
               "cmu_us_slt_arctic_hts": ("f4", 22050)}


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory):
    import json

    import librosa
    import numpy as np

    from speechinterp.corpus import espeak
    from speechinterp.corpus.sentences import SENTENCES

    d = tmp_path_factory.mktemp("bin")
    os.makedirs(d / "speech")
    texts = {t: k for k, t in enumerate(SENTENCES["en"])}
    for voice, (variant, sr) in FAKE_VOICES.items():
        for t, k in texts.items():
            wav = espeak.synthesize(t, "en-us+" + variant).astype(np.float32) / 32768.0
            sf.write(d / "speech" / f"{voice}_{k}.wav",
                     librosa.resample(wav, orig_sr=espeak.sample_rate(), target_sr=sr), sr,
                     subtype="PCM_16")
    (d / "texts.json").write_text(json.dumps(texts))
    for name in ("flite", "festival", "text2wave"):
        p = d / name
        p.write_text(FAKE.format(python=sys.executable, name=name))
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(d)


def build(out, path_env, *args):
    env = dict(os.environ, PATH=path_env)
    return subprocess.run([sys.executable, "-m", "experiments.build_corpus", f"--out={out}",
                           "--size=tiny", "--seed=2", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env)


def rows_of(d):
    with open(os.path.join(d, "utterances.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_missing_programs_are_named(tmp_path, monkeypatch, fake_bin):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(external_tts.TTSNotInstalled, match=r"`flite` program on PATH.*"
                                                           r"apt-get install flite"):
        builtin.external_voices(["espeak", "flite"])
    os.symlink(os.path.join(fake_bin, "festival"), empty / "festival")   # text2wave missing
    with pytest.raises(external_tts.TTSNotInstalled, match="`text2wave` program on PATH"):
        builtin.external_voices(["festival"])
    assert builtin.external_voices(["espeak"]) == []    # espeak alone needs no program
    r = build(tmp_path / "c", str(empty), "--voices=flite,festival")
    assert r.returncode != 0 and "`flite` program on PATH" in r.stderr
    assert not os.path.exists(tmp_path / "c" / "utterances.csv")


def test_voice_selection(monkeypatch, fake_bin):
    monkeypatch.setenv("PATH", fake_bin)
    got = builtin.external_voices(["flite", "festival:cmu_us_slt_arctic_hts", "flite:slt"])
    assert [(v.name, v.gender, v.accent, v.person) for v in got] == [
        ("flite_kal", "male", "us", "kal"), ("flite_slt", "female", "us", "slt"),
        ("festival_cmu_us_slt_arctic_hts", "female", "us", "slt")]
    with pytest.raises(ValueError, match=r"flite has no voice 'nosuch'; installed: \['kal', "
                                         r"'slt'\]"):
        builtin.external_voices(["flite:nosuch"])
    with pytest.raises(ValueError, match="unknown voice source 'mbrola'"):
        builtin.external_voices(["mbrola"])
    assert external_tts.voice_info("some_new_voice") == ("", "", "some_new_voice")


def test_flite_and_festival_voices_join_the_corpus(tmp_path, fake_bin):
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    r = build(plain, os.environ["PATH"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = build(extra, fake_bin + os.pathsep + os.environ["PATH"], "--voices=flite,festival")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(2 from flite, 2 from festival)" in r.stdout
    base, rows = rows_of(plain), rows_of(extra)
    assert rows[:len(base)] == base           # the espeak part is unchanged ...
    for b in base[::41]:                      # ... down to the audio bytes
        assert (plain / b["path"]).read_bytes() == (extra / b["path"]).read_bytes()
    ext = rows[len(base):]
    gender = {r["speaker"]: r["gender"] for r in ext}
    assert gender == {"flite_kal": "male", "flite_slt": "female",
                      "festival_kal_diphone": "male",
                      "festival_cmu_us_slt_arctic_hts": "female"}
    channels = {r["channel"] for r in base}
    for spk in gender:                        # every extra speaker in every channel
        assert {r["channel"] for r in ext if r["speaker"] == spk} == channels
    assert {r["language"] for r in ext} == {"en"} and {r["accent"] for r in ext} == {"us"}
    split = {r["speaker"]: r["split"] for r in ext}
    assert len({(r["speaker"], r["split"]) for r in ext}) == 4      # speaker-disjoint
    assert split["flite_kal"] == split["festival_kal_diphone"]      # one person, one split
    assert split["flite_slt"] == split["festival_cmu_us_slt_arctic_hts"]
    for r_ in ext[::5]:
        wav, sr = sf.read(extra / r_["path"])
        assert sr == 16000 and len(wav) > 8000 and abs(wav).max() > 0.05
    calls = open(os.path.join(fake_bin, "calls.log")).read()
    assert "flite -voice slt -t " in calls and "text2wave -o " in calls
    assert "(voice_cmu_us_slt_arctic_hts)" in calls and "-voice awb_time" not in calls
