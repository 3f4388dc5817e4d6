"""The whole study on the tiny preset (built-in corpus, real GE2E weights, a trained CNN, random
baselines), and in-encoder masking for the bias analysis."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from speechinterp.analysis import bias
from speechinterp.encoders.cnn import CNNEncoder
from speechinterp.study import CorpusSummary, EncoderRun, RecordedCorpus, StudySummary
from speechinterp.study.cache import StageCache, stage_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path):
    out = str(tmp_path / "study")
    cmd = [sys.executable, "-m", "experiments.run_study",
           "--config=experiments/configs/study_tiny.py", f"--out={out}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ("report.md", "report.html", "results.json", "figures/eer.png",
              "figures/layerwise_gender.png", "figures/overlap.png", "figures/bias.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    res = json.load(open(os.path.join(out, "results.json")))
    assert set(res["encoders"]) == {"ge2e", "ge2e_random", "cnn_accent", "cnn_accent_random"}
    ge2e = res["encoders"]["ge2e"]["probes"]
    # the real speaker encoder finds gender and channel; controls stay near chance
    best = lambda p: max(l["accuracy"] for l in ge2e[p]["layers"])
    assert best("gender") > 0.9 and best("channel") > 0.6
    assert best("speaker") > 0.5   # 21 speakers: chance is about 0.05
    # control labels per speaker, on 7 unseen test speakers: the point estimate is 7 draws of
    # the control labels (0.75 happens), so it is checked through its clustered interval, and
    # the real encoder's gender probe stays well above its control
    for p in ("gender", "channel"):
        for l in ge2e[p]["layers"]:
            assert l["control_accuracy_ci95"][0] < ge2e[p]["majority_accuracy"] + 0.15, l
            assert l["accuracy_ci95"][0] <= l["accuracy"] <= l["accuracy_ci95"][1]
    assert max(l["selectivity"] for l in ge2e["gender"]["layers"]) > 0.1
    assert ge2e["speaker"]["layers"][0]["selectivity"] is None       # n/a for speaker identity
    assert ge2e["gender"]["probe_setting"] == "neurox" and ge2e["gender"]["ranking_stability"]
    assert res["encoders"]["cnn_accent"]["task_model"]["test_accuracy_ci95"]
    assert res["encoders"]["ge2e"]["architecture"] == "lstm"
    assert len(res["findings"]) == 9
    assert res["eer"]["ge2e"]["eer"][-1] < res["eer"]["ge2e_random"]["eer"][-1]
    assert res["bias"]["cnn_accent"]["masked_neurons"] > 0
    # issue 15: every ranking method for gender and channel, and amnesic probing in GE2E
    g = res["encoders"]["ge2e"]["probes"]["gender"]
    assert set(g["by_ranking"]) == {"per_neuron", "probeless", "iou", "gaussian"}
    assert "by_ranking" not in res["encoders"]["ge2e"]["probes"]["speaker"]
    am = res["amnesic"]["ge2e"]["gender"]
    assert am["eraser_check"]["accuracy_after"] < am["eraser_check"]["accuracy_before"]
    assert set(am["tasks"]) == {"gender", "speaker", "language", "channel"}
    report = open(os.path.join(out, "report.md")).read()
    assert "## Methods: how far neuron rankings agree" in report
    assert "## What later layers use: amnesic probing" in report
    assert os.path.getsize(os.path.join(out, "figures", "ranking_agreement.png")) > 0
    # a rerun skips every finished stage
    r2 = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r2.returncode == 0 and "running" not in "".join(
        l for l in r2.stdout.splitlines() if l.startswith("[stage]"))


def test_in_encoder_masking_changes_only_what_it_should():
    enc = CNNEncoder.from_preset("tiny", seed=0, n_classes=3, classes=("a", "b", "c"))
    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, 16000).astype(np.float32) for _ in range(3)]
    names = enc.layer_names
    dims = [h.shape[-1] for h in enc.hidden_states(waves)]
    none = bias.layer_masks([], names, dims, count=0)
    np.testing.assert_array_equal(bias.predict_classes(enc, waves, none),
                                  bias.predict_classes(enc, waves))
    k = names.index("cnn3")
    masks = bias.layer_masks([[k, 0], [k, 1]], names, dims, count=2)
    ref, hid = enc.hidden_states(waves), enc.hidden_states(waves, masks=masks)
    for i in range(k):                          # earlier layers untouched
        np.testing.assert_array_equal(np.asarray(ref[i]), np.asarray(hid[i]))
    assert np.all(np.asarray(hid[k])[..., :2] == 0)
    np.testing.assert_array_equal(np.asarray(ref[k])[..., 2:], np.asarray(hid[k])[..., 2:])
    assert not np.allclose(np.asarray(ref[k + 1]), np.asarray(hid[k + 1]))
    logits = np.asarray(enc.predict_logits(waves, masks=masks))
    assert not np.allclose(logits, np.asarray(enc.predict_logits(waves)))


def test_group_accuracy():
    acc = bias.group_accuracy(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]),
                              np.array(["f", "f", "m", "m"]))
    assert acc == {"f": 1.0, "m": 0.5, "all": 0.75, "gap": 0.5}


def test_presets_take_command_line_overrides(tmp_path):
    """study_paper's checkpoint slots and property tuple are set from flags; empty slots are
    skipped without running a converter."""
    code = """
import sys
from absl import app, flags
from ml_collections import config_flags
from speechinterp.study import stages
from speechinterp.study.cache import StageCache
config_flags.DEFINE_config_file("config")
def main(_):
    c = flags.FLAGS.config
    print(tuple(c.properties), c.pretrained.wav2vec2_base, c.task_cnns.cnn_dialect)
    c.pretrained.wav2vec2_base = ""
    ran = []
    ctx = stages.Context(c, sys.argv[1], StageCache(sys.argv[1]), lambda *a: ran.append(a),
                         print)
    print(stages.pretrained_encoders(ctx), ran)
app.run(main)
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path),
                        "--config=experiments/configs/study_paper.py",
                        "--config.properties=('gender', 'speaker')",
                        "--config.pretrained.wav2vec2_base=/ckpt/wav2vec2-base",
                        "--config.task_cnns.cnn_dialect=dialect"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["('gender', 'speaker') /ckpt/wav2vec2-base dialect", "{} []"]


def test_extraction_stage_resumes_only_with_the_same_inputs(tmp_path):
    cache = StageCache(str(tmp_path))
    seen = []

    def interrupted(d):
        open(os.path.join(d, "part"), "w").write("x")
        raise KeyboardInterrupt

    def finish(d):
        seen.append(sorted(os.listdir(d)))

    with pytest.raises(KeyboardInterrupt):
        cache.run("extract_enc", {"encoder": 1}, interrupted)
    cache.run("extract_enc", {"encoder": 1}, finish)     # resumes: part kept
    with pytest.raises(KeyboardInterrupt):
        cache.run("extract_enc", {"encoder": 2}, interrupted)
    cache.run("extract_enc", {"encoder": 3}, finish)     # other inputs: fresh
    assert seen == [[".started", "part"], [".started"]]


def test_stage_cache_reruns_on_changed_inputs_or_a_missing_done_stamp(tmp_path):
    events, runs = [], []
    cache = StageCache(str(tmp_path), lambda name, status, s: events.append((name, status)))

    def work(d):
        runs.append(d)

    cache.run("probe_x", {"a": 1}, work)
    st = cache.run("probe_x", {"a": 1}, work)          # cached
    assert len(runs) == 1 and st.key == stage_key("probe_x", {"a": 1})
    assert events == [("probe_x", "running"), ("probe_x", "done"), ("probe_x", "cached")]
    assert cache.times["probe_x"] == 0.0
    cache.run("probe_x", {"a": 2}, work)          # changed input: reruns
    assert len(runs) == 2
    os.remove(os.path.join(str(tmp_path), "stages", "probe_x", ".done"))    # interrupted: redone
    cache.run("probe_x", {"a": 2}, work)
    assert len(runs) == 3


def test_records_round_trip_results_json():
    """results.json -> StudySummary -> results.json is the identity, and the lookups that the
    report and figures use find the random copy and the task CNNs."""
    tm = {"property": "accent", "learned": True}
    runs = {"enc": EncoderRun("enc", "d/enc", "k1", "pretrained", family="ge2e",
                              architecture="lstm", store="s1", store_key="sk1",
                              probes={"gender": {"layers": []}}),
            "cnn": EncoderRun("cnn", "d/cnn", "k2", "task_cnn", trained_for="accent",
                              store="s2", store_key="sk2", task_model=tm),
            "enc_random": EncoderRun("enc_random", "d/r", "k3", "pretrained", random=True,
                                     base="enc", store="s3", store_key="sk3"),
            "cnn_random": EncoderRun("cnn_random", "d/cr", "k4", "task_cnn", random=True,
                                     base="cnn", trained_for="accent", store="s4",
                                     store_key="sk4", task_model=tm)}
    rec = RecordedCorpus("ok", ({"name": "ami", "status": "ok"},), "rec.csv",
                         {"gender": [True, {"f": 3, "m": 3}]},
                         CorpusSummary({"enc": runs["enc"].unprobed()}))
    s = StudySummary(encoders=runs, eer={"enc": {"layers": ["a"], "eer": [0.1]}},
                     findings=({"finding": "x"},), amnesic={"enc": {}}, recorded=rec,
                     corpus_manifest="m.csv", stage_times_s={"corpus": 1.0}, total_time_s=2.0,
                     config={"seed": 0})
    d = json.loads(json.dumps(s.to_json()))
    assert StudySummary.from_json(d).to_json() == d
    assert list(d["encoders"]["cnn"]) == ["dir", "key", "kind", "random", "trained_for",
                                          "store", "store_key", "probes", "task_model"]
    assert "trained_for" not in d["encoders"]["cnn_random"]
    assert s.random_copy("enc").name == "enc_random" and s.random_copy("enc_random") is None
    assert set(s.real()) == {"enc", "cnn"} and set(s.task_cnns()) == {"cnn"}
    assert s.properties() == ["gender"] and rec.studied() is not None
    assert RecordedCorpus("unavailable: x").to_json() == {"status": "unavailable: x",
                                                          "sources": []}


def test_ranking_methods_for_baselines_and_other_properties():
    from experiments.configs import study_default
    from speechinterp.study.stages import ranking_methods
    c = study_default.get_config()
    assert ranking_methods(c, "gender", baseline=False) == tuple(c.probe.rankings.split(","))
    assert ranking_methods(c, "gender", baseline=True) == ("weight_mass",)
    assert ranking_methods(c, "speaker", baseline=False) == ("weight_mass",)
