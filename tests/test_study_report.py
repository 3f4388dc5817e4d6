"""Findings and the report from a study summary built on planted stores (no encoders needed)."""
import os

import pytest

from speechinterp import store, synthetic
from speechinterp.analysis import neurons, plots, report
from speechinterp.probes import elastic_net, protocol
from speechinterp.study import StudySummary
from speechinterp.study.analyses import with_findings
from speechinterp.study.records import EncoderRun


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    """Two encoders and their random copies on planted stores, through the study's records."""
    d = tmp_path_factory.mktemp("study")
    runs, eer = {}, {}
    # accent planted in the last layer of the CNN, in the first layer of the "Transformer"
    for name, kind, layer in (("whisper_x", "pretrained", 0), ("cnn_accent", "task_cnn", 2)):
        arrays, rows = synthetic.planted_arrays(num_utterances=500, num_speakers=48,
                                                dims=(16, 16, 16), signal_layer=layer,
                                                strength=5.0, seed=layer)
        for r in rows:
            r["accent"] = r.pop("prop")
            r["gender"] = "f" if int(r["speaker"][1:]) % 2 else "m"
        st = store.write_store(str(d / name), name, ["l0", "l1", "l2"], arrays, rows)
        probes = {p: protocol.run_probing(st, p, elastic_net.CONFIGS["default"],
                                          per_neuron=False)[0] for p in ("accent", "gender")}
        task_model = None
        if kind == "task_cnn":
            task_model = {"property": "accent", "test_accuracy": 0.9,
                          "test_accuracy_ci95": [0.8, 0.95], "majority_accuracy": 0.25,
                          "learned": True}
        runs[name] = EncoderRun(name, str(d / name), name, kind,
                                trained_for="accent" if kind == "task_cnn" else None,
                                family="whisper" if layer == 0 else "cnn", store=st.path,
                                probes=probes, task_model=task_model)
        runs[name + "_random"] = EncoderRun(
            name + "_random", "", name + "_random", kind, random=True, base=name,
            probes={"accent": protocol.run_probing(st, "accent", elastic_net.CONFIGS["default"],
                                                   layerwise_only=True)[0]})
        eer[name] = {"layers": ["l0", "l1", "l2"], "eer": [0.3, 0.2, 0.1]}
    overlap = {n: neurons.salient_overlap(r.probes) for n, r in runs.items() if not r.random}
    bias = {"cnn_accent": {
        "task": "accent", "protected": "gender", "masked_neurons": 3, "utterances": 50,
        "accuracy": {"f": 0.8, "m": 0.7, "all": 0.75, "gap": 0.1},
        "masked": {"f": 0.5, "m": 0.6, "all": 0.55, "gap": 0.1},
        "random_masked": {"f": 0.8, "m": 0.7, "all": 0.75, "gap": 0.1},
        "masked_drop": {"f": 0.3, "m": 0.1, "all": 0.2, "gap": 0.2},
        "counts": {"f": {"utterances": 25, "speakers": 6}, "m": {"utterances": 25, "speakers": 6}},
        "gap_ci95": [0.02, 0.18], "masked_drop_gap_ci95": [0.1, 0.3]}}
    return with_findings(StudySummary(encoders=runs, eer=eer, overlap=overlap, bias=bias))


def test_nine_findings_with_honest_verdicts(summary):
    f = {x["finding"]: x for x in summary.findings}
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
    figs = plots.study_figures(summary)
    assert {"layerwise_accent.png", "minimal_subset_heatmap.png", "ablation.png", "overlap.png",
            "eer.png", "bias.png", "best_layer.png"} <= set(figs)
    os.makedirs(tmp_path / "figures")
    for k, v in figs.items():
        v.savefig(tmp_path / "figures" / k, dpi=60)
    md = report.markdown(summary, sorted(figs))
    assert "## Findings" in md and md.count("| **") == 9 and "Limits of the built-in corpus" in md
    page = report.html_page(md, str(tmp_path / "figures"))
    assert page.count("data:image/png;base64,") == len(figs)
    assert "<table>" in page
