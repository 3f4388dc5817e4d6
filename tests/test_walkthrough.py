"""The README's walk-through, run as written: audio folders -> manifest -> GE2E -> store -> probes.

Every fenced block between ``<!-- walkthrough -->`` and ``<!-- /walkthrough -->`` in README.md
runs in order (``bash`` blocks with bash, ``python`` blocks with this interpreter) in a temporary
folder that holds ``my_audio/<gender>/<speaker>/*.wav``: short synthetic voiced sounds, 8
speakers per label, each speaker with its own pitch. ``.venv/bin/python`` is replaced by this
interpreter; nothing else in the commands changes. The resemblyzer wheel that step 2 fetches is
put in the wheel cache first, made from the installed reference package (as in test_ge2e), so the
test needs no network.
"""
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BLOCK = re.compile(r"<!-- walkthrough -->\s*```(\w+)\n(.*?)```\s*<!-- /walkthrough -->", re.S)


def walkthrough_blocks():
    """[(language, code)] of the README's walk-through blocks, in order."""
    with open(README) as f:
        return BLOCK.findall(f.read())


def write_audio(root, speakers_per_label=8, utterances=3, sample_rate=16000, seconds=1.0):
    """my_audio/<label>/<speaker>/uttN.wav: harmonic tones with a slow vibrato, the pitch range
    set by the label and the pitch by the speaker."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    for label, (lo, hi) in {"female": (180.0, 250.0), "male": (90.0, 140.0)}.items():
        for s in range(speakers_per_label):
            f0 = rng.uniform(lo, hi)
            d = os.path.join(root, label, f"spk_{label}_{s:02d}")
            os.makedirs(d)
            for u in range(utterances):
                f = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
                phase = 2 * np.pi * np.cumsum(f) / sample_rate
                x = sum(np.sin(k * phase) / k for k in range(1, 20)) * np.hanning(len(t))
                x = x + 0.01 * rng.standard_normal(len(t))
                sf.write(os.path.join(d, f"utt{u}.wav"),
                         (0.3 * x / np.abs(x).max()).astype(np.float32), sample_rate)


def seed_wheel_cache(folder):
    """A resemblyzer 0.1.4 wheel holding the installed package's pretrained.pt, where the
    walk-through's fetch_wheel_file call looks first."""
    import resemblyzer   # a reference package of .ci/install; its absence is a failure

    pt = os.path.join(os.path.dirname(resemblyzer.__file__), "pretrained.pt")
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(os.path.join(folder, "Resemblyzer-0.1.4-py3-none-any.whl"), "w") as z:
        z.write(pt, "resemblyzer/pretrained.pt")


def test_readme_has_the_walkthrough_blocks():
    blocks = walkthrough_blocks()
    langs = [lang for lang, _ in blocks]
    assert langs[0] == "bash" and "python" in langs, langs
    commands = blocks[0][1]
    for verb in ("import_corpus", "convert", "extract", "probe"):
        assert f"-m experiments.{verb} " in commands, verb


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path):
    write_audio(str(tmp_path / "my_audio"))
    seed_wheel_cache(str(tmp_path / "runs" / "wheels"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    for i, (lang, code) in enumerate(walkthrough_blocks()):
        if lang == "bash":
            cmd = ["bash", "-euo", "pipefail", "-c",
                   code.replace(".venv/bin/python", sys.executable)]
        else:
            assert lang == "python", lang
            cmd = [sys.executable, "-c", code]
        p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, f"block {i} ({lang}) failed:\n{code}\n{p.stdout[-3000:]}" \
                                  f"\n{p.stderr[-3000:]}"
        if lang == "python":
            assert p.stdout.strip(), f"block {i} printed nothing"

    out = tmp_path / "runs" / "walk" / "probe" / "gender"
    for name in ("results.json", "table.md", "layerwise.png", "minimal_subset.png",
                 "ablation.png"):
        assert (out / name).stat().st_size > 0, name
    r = json.loads((out / "results.json").read_text())
    assert r["classes"] == ["female", "male"] and r["probe_setting"] == "default"
    assert [row["name"] for row in r["layers"]] == ["lstm1", "lstm2", "lstm3", "linear",
                                                   "embedding"]
    assert r["interval"]["resampled"] == "test speakers"
    assert r["interval"]["num_resampled"] == sum(r["speakers_per_class"]["test"].values()) >= 2

    def is_interval(v):
        return len(v) == 2 and v[0] <= v[1] and 0 <= v[0] and v[1] <= 1

    assert is_interval(r["majority_accuracy_ci95"])
    for row in r["layers"] + [r["oracle"]]:
        assert is_interval(row["accuracy_ci95"])
        assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
        assert row["gain_ci95"][0] <= row["gain_ci95"][1]
    assert is_interval(r["minimal_subset"]["accuracy_ci95"])
    assert is_interval(r["ablation_ci95"]["retrain"]["top"]["10"])
    # the walk-through's store and manifest agree with the audio written
    with open(tmp_path / "runs" / "walk" / "store" / "meta.json") as f:
        assert json.load(f)["encoder"] == "ge2e"
    assert sum(r["split_sizes"].values()) == 2 * 8 * 3
