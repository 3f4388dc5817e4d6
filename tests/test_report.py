"""The study report from hand-made summaries: tables, intervals, n/a, bias counts, figures."""
import copy
import os

import pytest

from speechinterp.analysis import plots, report
from speechinterp.study import StudySummary


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
    """A study's results.json (read back with ``StudySummary.from_json``)."""
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
    md = report.markdown(StudySummary.from_json(s), ["bias.png"])
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
    figs = plots.study_figures(StudySummary.from_json(make_summary(ci)))
    assert {"layerwise_gender.png", "layerwise_speaker.png", "ablation.png", "bias.png",
            "best_layer.png", "eer.png", "minimal_subset_heatmap.png"} <= set(figs)
    for k, v in figs.items():
        v.savefig(tmp_path / k, dpi=40)
        plots.plt.close(v)


def test_paired_colours():
    s = make_summary()
    c = plots.encoder_styles(StudySummary.from_json(s).encoders)
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
    md = report.markdown(StudySummary.from_json(s2), [])
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


def test_study_scripts_log_to_the_study_log(tmp_path):
    """The study's scripts run under ``cli.run`` with the study log in the environment: their
    library INFO lines go to the log only, their warnings to the console and the log."""
    import subprocess
    import sys

    from speechinterp import cli
    script = ("from absl import logging\nfrom speechinterp import cli\n"
              "def main(_):\n    logging.info('saved'); logging.warning('careful')\n"
              "cli.run(main)\n")
    log = tmp_path / "study.log"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, cli.LOG_ENV: str(log)})
    assert r.returncode == 0, r.stderr
    assert "saved" not in r.stderr and "careful" in r.stderr
    text = log.read_text()
    assert "saved" in text and "careful" in text


def test_a_failed_study_script_names_itself():
    from experiments import run_study
    with pytest.raises(RuntimeError, match="experiments.convert failed"):
        run_study.run_script("convert", "--source=/nonexistent/checkpoint.pt", "--out=/nonexistent/x")


# ----------------------------------------------------------------------------- recorded corpus
def _recorded(status="ok"):
    """A hand-made ``summary["recorded"]`` (the second corpus, recorded human speech)."""
    sources = [{"name": "ami", "status": "ok", "utterances": 120, "speakers": 27,
                "speakers_per_gender": {"female": 12, "male": 15}, "languages": ["en"],
                "licence": "CC-BY 4.0"},
               {"name": "asterisk", "status": "unavailable: apt-get download failed",
                "utterances": 0, "speakers": 0, "speakers_per_gender": {}, "languages": [],
                "licence": "CC-BY-SA 3.0"}]
    if status != "ok":
        return {"status": status, "sources": sources}
    base = make_summary()
    encs = {}
    for name, kind in (("whisper_x", "pretrained"), ("cnn_accent", "task_cnn")):
        e = copy.deepcopy(base["encoders"][name])
        e["probes"] = {"gender": _probe([0.7, 0.8, 0.75]),
                       "speaker_id": _probe([0.6, 0.9, 0.7], speaker=True),
                       "channel": _probe([0.5, 0.55, 0.6])}
        e["probes"]["speaker_id"]["task"] = "speaker_id"
        encs[name] = e
    encs["whisper_x_random"] = {"kind": "pretrained", "random": True, "base": "whisper_x",
                                "probes": {"gender": _probe([0.5, 0.52, 0.51], trained=False)}}
    f = copy.deepcopy(base["findings"][0])
    f.update({"outcome": "holds", "holds": True, "per_encoder": {
        "cnn_accent": {"outcome": "holds", "why": "recorded reason"}}})
    return {"status": "ok", "corpus_manifest": "rec.csv", "sources": sources,
            "testable": {"gender": [True, {"female": 24, "male": 28}],
                         "speaker": [True, {"speakers": 62, "with_enough_utterances": 42}],
                         "language": [False, {"be": 1, "cs": 2, "en": 40}],
                         "channel": [True, {"clean": 62, "gsm": 62}]},
            "encoders": encs,
            "eer": {"whisper_x": {"layers": ["l0", "l1", "l2"], "eer": [0.05, 0.02, 0.04]},
                    "cnn_accent": {"layers": ["l0", "l1"], "eer": [0.3, 0.25]}},
            "overlap": {"whisper_x": {"names": ["gender", "channel"], "shared": [[3, 0], [0, 3]],
                                      "jaccard": [[1, 0], [0, 1]]}},
            "redundancy": {}, "bias": {}, "findings": [f]}


def test_recorded_corpus_side_by_side(tmp_path):
    s = make_summary()
    s["recorded"] = _recorded()
    figs = plots.study_figures(StudySummary.from_json(s))
    assert {"recorded_layerwise_gender.png", "recorded_layerwise_speaker_id.png",
            "recorded_layerwise_channel.png", "recorded_best_layer.png", "recorded_eer.png",
            "recorded_overlap.png", "best_layer_corpora.png", "eer_corpora.png"} <= set(figs)
    assert "recorded_bias.png" not in figs and "bias.png" in figs
    os.makedirs(tmp_path / "figures")
    for k, v in figs.items():
        v.savefig(tmp_path / "figures" / k, dpi=40)
        plots.plt.close(v)
    md = report.markdown(StudySummary.from_json(s), sorted(figs))
    assert "{'" not in md and "['" not in md and "[True" not in md and "(True" not in md
    # findings: one outcome column per corpus, the criterion once
    assert ("| # | finding (about) | criterion | built-in espeak corpus | recorded speech | "
            "figure |") in md
    row = next(l for l in md.splitlines() if l.startswith("| 1 |"))
    assert row.count("| c |") == 1
    assert ("**undecided**. Per encoder: `cnn_accent`: undecided (w) | **holds**. Per encoder: "
            "`cnn_accent`: holds (recorded reason) | `bias.png` |") in row
    # what the corpus can and cannot show
    assert "## Recorded human speech: what this corpus can and cannot show" in md
    assert "| ami | ok | 120 | 27 (female 12, male 15) | en | CC-BY 4.0 |" in md
    assert ("| asterisk | **unavailable**: apt-get download failed | - | - | - | CC-BY-SA 3.0 |"
            in md)
    assert "Could not be fetched: asterisk (apt-get download failed)." in md
    assert "- gender: female 24 speakers, male 28 speakers" in md
    assert "- speaker: 62 speakers, 42 with enough utterances for all three splits" in md
    assert ("- language: **not testable on this corpus: confounded with speaker** (be 1 speaker, "
            "cs 2 speakers, en 40 speakers)") in md
    assert ("for gender, speaker identity and channel (simulated on the real recordings)" in md
            and "cannot show: language," in md)
    # layer-wise tables for both corpora, with intervals
    assert "## Layer-wise results: built-in espeak corpus" in md
    rec_part = md.split("## Layer-wise results: recorded human speech")[1]
    assert "#### whisper_x / speaker_id" in rec_part and "#### cnn_accent / channel" in rec_part
    assert "0.800 [0.750, 0.840] ± 0.010" in rec_part and "0.520 [0.470, 0.560]" in rec_part
    # EER side by side; task models and bias: espeak only
    assert ("| encoder | built-in espeak corpus: best layer EER % | recorded speech: best layer "
            "EER % | recorded - espeak (points) |") in md
    assert "| whisper_x | 10.0 (l2) | 2.0 (l1) | -8.0 |" in md
    assert "| cnn_accent | - | 25.0 (l1) | - |" in md
    assert "| whisper_x_random | 40.0 (l0) | - | - |" in md
    assert "Recorded speech, per layer:" in md and "- whisper_x: l0 5.0, l1 2.0, l2 4.0" in md
    assert "for 1 of 1 encoders measured on both" in md
    assert "bias analysis are for the built-in espeak corpus only" in md
    assert md.count("## Bias") == 1 and md.count("## Task models") == 1
    assert "### recorded speech: layerwise gender" in md and "### best layer: both corpora" in md
    page = report.html_page(md, str(tmp_path / "figures"))
    assert page.count("data:image/png;base64,") == len(figs)


def test_recorded_corpus_unavailable():
    s = make_summary()
    s["recorded"] = _recorded("unavailable: no source could be fetched")
    figs = plots.study_figures(StudySummary.from_json(s))
    assert not any(k.startswith("recorded_") or "corpora" in k for k in figs)
    for v in figs.values():
        plots.plt.close(v)
    md = report.markdown(StudySummary.from_json(s), sorted(figs))
    assert "{'" not in md and "['" not in md
    assert "Recorded-speech corpus: **unavailable**: no source could be fetched." in md
    assert "| built-in espeak corpus | recorded speech |" in md
    assert "| not run (corpus unavailable) |" in md
    assert "could not be built (**unavailable**: no source could be fetched)" in md
    assert "| asterisk | **unavailable**: apt-get download failed |" in md
    assert "## Layer-wise results\n" in md and "Recorded speech, per layer" not in md


def test_old_summary_renders_as_before():
    s = make_summary()
    md = report.markdown(StudySummary.from_json(s), ["bias.png"])
    assert "| # | finding (about) | criterion | built-in espeak corpus | figure |" in md
    assert "| **undecided**. Per encoder: `cnn_accent`: undecided (w) | `bias.png` |" in md
    assert "recorded" not in md.lower() and "espeak corpus only" not in md
    assert "## Layer-wise results\n" in md and "- whisper_x: l0 30.0, l1 20.0, l2 10.0" in md
    figs = plots.study_figures(StudySummary.from_json(s))
    assert not any(k.startswith("recorded_") or "corpora" in k for k in figs)
    for v in figs.values():
        plots.plt.close(v)
