"""Findings and the report from a study summary built on planted stores (no encoders needed)."""
import os

import pytest

from speechinterp import store, synthetic
from speechinterp.analysis import findings, neurons, report
from speechinterp.probes import elastic_net, protocol


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    s = {"encoders": {}, "eer": {}}
    # accent planted in the last layer of the CNN, in the first layer of the "Transformer"
    for name, kind, layer in (("whisper_x", "pretrained", 0), ("cnn_accent", "task_cnn", 2)):
        arrays, rows = synthetic.planted_arrays(num_utterances=500, num_speakers=48,
                                                dims=(16, 16, 16), signal_layer=layer,
                                                strength=5.0, seed=layer)
        for r in rows:
            r["accent"] = r.pop("prop")
            r["gender"] = "f" if int(r["speaker"][1:]) % 2 else "m"
        st = store.write_store(str(d / name), name, ["l0", "l1", "l2"], arrays, rows)
        e = {"kind": kind, "random": False, "family": "whisper" if layer == 0 else "cnn",
             "probes": {p: protocol.run_probing(st, p, elastic_net.CONFIGS["default"], per_neuron=False)[0]
                        for p in ("accent", "gender")}}
        if kind == "task_cnn":
            e["trained_for"] = "accent"
            e["task_model"] = {"property": "accent", "test_accuracy": 0.9,
                               "test_accuracy_ci95": [0.8, 0.95], "majority_accuracy": 0.25,
                               "learned": True}
        s["encoders"][name] = e
        s["encoders"][name + "_random"] = {
            "kind": kind, "random": True, "base": name,
            "probes": {"accent": protocol.run_probing(st, "accent", elastic_net.CONFIGS["default"],
                                                      layerwise_only=True)[0]}}
        s["eer"][name] = {"layers": ["l0", "l1", "l2"], "eer": [0.3, 0.2, 0.1]}
    s["overlap"] = {}
    for n, e in s["encoders"].items():
        if not e["random"]:
            names, sh, jac = neurons.overlap_matrix(
                {p: neurons.salient_set(r) for p, r in e["probes"].items()})
            s["overlap"][n] = {"names": names, "shared": sh.tolist(), "jaccard": jac.tolist()}
    s["bias"] = {"cnn_accent": {
        "task": "accent", "protected": "gender", "masked_neurons": 3, "utterances": 50,
        "accuracy": {"f": 0.8, "m": 0.7, "all": 0.75, "gap": 0.1},
        "masked": {"f": 0.5, "m": 0.6, "all": 0.55, "gap": 0.1},
        "random_masked": {"f": 0.8, "m": 0.7, "all": 0.75, "gap": 0.1},
        "masked_drop": {"f": 0.3, "m": 0.1, "all": 0.2, "gap": 0.2},
        "counts": {"f": {"utterances": 25, "speakers": 6}, "m": {"utterances": 25, "speakers": 6}},
        "gap_ci95": [0.02, 0.18], "masked_drop_gap_ci95": [0.1, 0.3]}}
    s["findings"] = findings.evaluate(s)
    return s


def test_nine_findings_with_honest_verdicts(summary):
    f = {x["finding"]: x for x in summary["findings"]}
    assert len(f) == 9
    # properties this run lacks cannot be decided
    assert f["Channel information is distributed across the network"]["holds"] is None
    assert f["Pretrained models capture speaker-invariant information"]["holds"] is None
    # accent sits in the CNN's top layer and is decodable there
    dialect = f["Dialect (accent) information is encoded only in the task-oriented network, "
                "in its upper layers"]
    assert "best layer l2" in dialect["evidence"] and "upper half" in dialect["evidence"]
    # gender carries no signal in these stores, but the few test speakers leave the gain
    # intervals wide (about +-0.4): no layer is shown to encode it, nor ruled out
    gender = f["Gender information is distributed across the network"]
    assert gender["holds"] is None and gender["outcome"] == "undecided"
    assert all(v["outcome"] == "undecided" for v in gender["per_encoder"].values())
    assert f["Gender bias is visible in task models"]["holds"] is True


def test_report_files(summary, tmp_path):
    figs = report.make_figures(summary)
    assert {"layerwise_accent.png", "minimal_subset_heatmap.png", "ablation.png", "overlap.png",
            "eer.png", "bias.png", "best_layer.png"} <= set(figs)
    os.makedirs(tmp_path / "figures")
    for k, v in figs.items():
        v.savefig(tmp_path / "figures" / k, dpi=60)
    md = report.markdown(summary, sorted(figs), {})
    assert "## Findings" in md and md.count("| **") == 9 and "Limits of the built-in corpus" in md
    page = report.html_page(md, str(tmp_path / "figures"))
    assert page.count("data:image/png;base64,") == len(figs)
    assert "<table>" in page
