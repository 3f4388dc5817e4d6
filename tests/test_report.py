"""The study report from hand-made summaries: tables, intervals, n/a, bias counts, figures."""
import copy

import pytest

from speechinterp.analysis import plots, report


def _layers(accs, ci=True, speaker=False, sd=True):
    out = []
    for i, a in enumerate(accs):
        l = {"name": f"l{i}", "dim": 8, "accuracy": a, "f1_macro": a - 0.01,
             "control_accuracy": None if speaker else 0.3,
             "selectivity": None if speaker else a - 0.3}
        if ci:
            l["accuracy_ci95"] = [a - 0.05, min(1.0, a + 0.04)]
        if sd:
            l["accuracy_seed_sd"] = 0.01
        out.append(l)
    return out


def _probe(accs, speaker=False, trained=True, ci=True):
    r = {"task": "speaker" if speaker else "gender", "classes": ["a", "b"],
         "probe_setting": "default", "majority_accuracy": 0.5,
         "split_sizes": {"train": 100, "dev": 30, "test": 40},
         "layers": _layers(accs, ci=ci, speaker=speaker, sd=ci)}
    if ci:
        r["majority_accuracy_ci95"] = [0.4, 0.6]
        r["speakers_per_class"] = {"train": {"a": 10, "b": 11}, "dev": {"a": 6, "b": 6},
                                   "test": {"a": 6, "b": 7}}
        r["convergence"] = {"ok": False, "below_majority": ["l0", "l1"],
                            "below_majority_significant": ["l0"],
                            "oracle_below_best_layer": False}
        r["interval"] = {"method": "percentile bootstrap", "level": 0.95, "resamples": 1000,
                         "resampled": "test speakers", "num_resampled": 13}
        for l in r["layers"]:
            if l["control_accuracy"] is not None:
                l["control_accuracy_ci95"] = [0.25, 0.35]
    if trained:
        pcts = {"10": 0.7, "20": 0.8}
        r["oracle"] = {"accuracy": 0.9, "f1_macro": 0.89}
        r["minimal_subset"] = {"delta": 0.01, "size": 3, "fraction": 0.125, "accuracy": 0.88,
                               "per_layer": {"l0": 1, "l2": 2}}
        r["ablation"] = {m: {h: dict(pcts) for h in ("top", "random", "bottom")}
                         for m in ("retrain", "zero_out")}
        if ci:
            r["oracle"]["accuracy_ci95"] = [0.85, 0.95]
            r["minimal_subset"]["accuracy_ci95"] = [0.8, 0.93]
            r["ablation_ci95"] = {m: {h: {p: [v - 0.1, v + 0.05] for p, v in pcts.items()}
                                      for h in ("top", "random", "bottom")}
                                  for m in ("retrain", "zero_out")}
            r["ranking_stability"] = {"seeds": 3, "top1_overlap": 0.8, "top5_overlap": 0.9}
    return r


def make_summary(ci=True):
    encs = {}
    for name, kind, acc in (("whisper_x", "pretrained", 0.9), ("cnn_accent", "task_cnn", 0.7)):
        encs[name] = {"kind": kind, "random": False, "family": "whisper",
                      "architecture": "transformer" if kind == "pretrained" else "cnn",
                      "probes": {"gender": _probe([0.6, acc, 0.8], ci=ci),
                                 "speaker": _probe([0.3, 0.5, 0.4], speaker=True, ci=ci)}}
        encs[name + "_random"] = {"kind": kind, "random": True, "base": name,
                                  "probes": {"gender": _probe([0.55, 0.6, 0.58], trained=False,
                                                              ci=ci)}}
    encs["cnn_accent"]["trained_for"] = "accent"
    if ci:
        tm = {"property": "accent", "test_accuracy": 0.812, "test_accuracy_ci95": [0.771, 0.85],
              "majority_accuracy": 0.143, "random_test_accuracy": 0.15,
              "random_test_accuracy_ci95": [0.1, 0.2], "learned": True,
              "test_utterances": 120, "test_speakers": 14, "epochs_run": 30, "best_epoch": 22}
        encs["cnn_accent"]["task_model"] = tm
        encs["cnn_accent_random"]["task_model"] = tm
    bias = {"task": "accent", "protected": "gender", "masked_neurons": 3, "utterances": 50,
            "accuracy": {"f": 0.8123456789, "m": 0.7, "all": 0.75, "gap": 0.1123456789},
            "masked": {"f": 0.5, "m": 0.6, "all": 0.55, "gap": 0.1},
            "random_masked": {"f": 0.8, "m": 0.7, "all": 0.75, "gap": 0.1},
            "masked_drop": {"f": 0.3, "m": 0.1, "all": 0.2, "gap": 0.2}}
    if ci:
        iv = {"f": [0.7, 0.9], "m": [0.6, 0.8], "all": [0.65, 0.85]}
        bias.update({"counts": {"f": {"utterances": 20, "speakers": 6},
                                "m": {"utterances": 30, "speakers": 7}},
                     "salient_fraction": 0.05, "accuracy_ci95": iv, "masked_ci95": iv,
                     "random_masked_ci95": iv, "masked_drop_ci95": iv,
                     "gap_ci95": [-0.1, 0.3], "masked_drop_gap_ci95": [-0.2, 0.5]})
    f = {"finding": "Gender bias is visible in task models", "criterion": "c",
         "about": "task models", "per_encoder": {"cnn_accent": {"outcome": "undecided",
                                                                 "why": "w"}},
         "outcome": "undecided", "holds": None, "evidence": "e", "figure": "bias.png"}
    return {"encoders": encs, "eer": {"whisper_x": {"layers": ["l0", "l1", "l2"],
                                                    "eer": [0.3, 0.2, 0.1]},
                                      "whisper_x_random": {"layers": ["l0", "l1", "l2"],
                                                           "eer": [0.4, 0.4, 0.4]}},
            "overlap": {"whisper_x": {"names": ["gender", "speaker"], "shared": [[3, 1], [1, 3]],
                                      "jaccard": [[1, 0.2], [0.2, 1]]}},
            "redundancy": {}, "bias": {"cnn_accent": bias}, "findings": [f],
            "stage_times_s": {"probe": 1.0}, "total_time_s": 2.0, "corpus_manifest": "m.csv"}


@pytest.mark.parametrize("ci", [True, False])
def test_markdown_tables(ci):
    s = make_summary(ci)
    if ci:   # two test speakers of class b: confounded with speaker identity
        s["encoders"]["cnn_accent"]["probes"]["gender"]["speakers_per_class"]["test"]["b"] = 2
    md = report.markdown(s, ["bias.png"], {})
    assert ("**Confounded with speaker identity**: fewer than 3 speakers in b (test: 2)"
            in md) == ci
    assert "{'" not in md and "['" not in md and "0.8123456789" not in md
    assert "## How to read this report" in md and "Hewitt & Liang 2019" in md
    assert "## Layer-wise results" in md and "## Bias" in md
    # the speaker task: control and selectivity not applicable, with the footnote
    assert "| 0.290 | n/a | n/a |" in md and "relabelling of the speakers" in md
    assert "| cnn_accent | accent | f |" in md and "0.812" in md
    if ci:
        assert "0.812 [0.771, 0.850]" in md                      # task model, with interval
        assert "| cnn_accent | accent | f | 20 | 6 | 0.812 [0.700, 0.900] |" in md
        assert "0.900 [0.850, 0.940] ± 0.010" in md and "probe setting `default`" in md
        assert "| test | 6 | 2 |" in md                          # speakers per class
        assert "Speakers per class: one (2 classes); per split: train 2, dev 2, test 2." in md
        assert "below the majority beyond the interval: l0" in md
        assert "within the interval: l1" in md and "top-1% overlap 0.800" in md
        assert "over 13 test speakers, 1000 resamples" in md and "0.300 [0.250, 0.350]" in md
        assert "learned its task" in md and "| yes |" in md and "| 120 (14) | 30 (22) |" in md
        assert "0.600 [0.550, 0.640]" in md                      # the random copy's layer
    else:
        assert "| cnn_accent | accent | f | - | - | 0.812 |" in md


@pytest.mark.parametrize("ci", [True, False])
def test_figures(ci, tmp_path):
    figs = report.make_figures(make_summary(ci))
    assert {"layerwise_gender.png", "layerwise_speaker.png", "ablation.png", "bias.png",
            "best_layer.png", "eer.png", "minimal_subset_heatmap.png"} <= set(figs)
    for k, v in figs.items():
        v.savefig(tmp_path / k, dpi=40)
        plots.plt.close(v)


def test_paired_colours():
    s = make_summary()
    c = plots.encoder_styles(s["encoders"])
    base, rnd = c["whisper_x"], c["whisper_x_random"]
    assert base["hatch"] is None and rnd["hatch"]
    assert c["cnn_accent"]["color"] != base["color"]
    # the random copy: same hue, lighter
    import colorsys
    hb = colorsys.rgb_to_hls(*base["color"][:3])
    hr = colorsys.rgb_to_hls(*rnd["color"][:3])
    assert abs(hb[0] - hr[0]) < 1e-6 and hr[1] > hb[1]


def test_old_summary_without_new_keys():
    s = make_summary(ci=False)
    for e in s["encoders"].values():
        for r in e["probes"].values():
            r.pop("probe_setting")
    s2 = copy.deepcopy(s)
    md = report.markdown(s2, [], {})
    assert "not recorded" in md and "{'" not in md


def test_bias_counts_and_clustered_intervals():
    import numpy as np

    from speechinterp.analysis import bias
    spk = np.repeat(np.arange(12), 20).astype(str)
    g = np.where(np.repeat(np.arange(12), 20) % 2, "f", "m")
    y = np.zeros(240, int)
    right = np.repeat(np.arange(12) % 3 != 0, 20)               # all-or-nothing per speaker
    preds = {"accuracy": np.where(right, 0, 1), "masked": np.where(right & (g == "m"), 0, 1),
             "random_masked": np.where(right, 0, 1)}
    r = bias.bias_from_predictions(preds, y, g, spk)
    assert r["counts"] == {"f": {"utterances": 120, "speakers": 6},
                           "m": {"utterances": 120, "speakers": 6}}
    assert r["clustered_by"] == "speaker" and r["masked"]["f"] == 0 and r["masked_drop"]["gap"] > 0
    for key in ("accuracy_ci95", "masked_ci95", "random_masked_ci95", "masked_drop_ci95"):
        for grp in ("f", "m", "all"):
            lo, hi = r[key][grp]
            point = r[key[:-5]][grp]
            assert lo <= point + 1e-9 and point - 1e-9 <= hi
    assert r["gap_ci95"][0] <= 0 <= r["gap_ci95"][1]
    lo, hi = r["masked_drop_gap_ci95"]
    assert lo <= r["masked_drop"]["gap"] <= hi
    flat = bias.bias_from_predictions(preds, y, g, None)     # utterances: far too narrow
    width = lambda x: x["accuracy_ci95"]["f"][1] - x["accuracy_ci95"]["f"][0]
    assert flat["clustered_by"] == "utterance" and flat["counts"]["f"]["speakers"] is None
    assert width(r) > 2 * width(flat)


def test_study_log_routes_library_info_lines(tmp_path, capfd):
    import sys

    from experiments import run_study
    script = ("import sys; e = sys.stderr.write; "
              "e('I1201 10:00:00.1 1 orbax.py:1] saved\\nsecond line\\n'); "
              "e('\\rbar 1/2\\rbar 2/2\\n'); e('W1201 10:00:01.1 1 x.py:2] careful\\n')")
    log = tmp_path / "study.log"
    assert run_study.run_logged([sys.executable, "-c", script], str(tmp_path), str(log)) == 0
    err = capfd.readouterr().err
    assert "saved" not in err and "second line" not in err
    assert "bar 2/2" in err and "careful" in err
    text = log.read_text()
    assert "saved" in text and "second line" in text and "careful" in text
