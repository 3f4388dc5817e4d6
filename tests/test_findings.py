"""The nine findings' criteria on hand-made summaries: each outcome, the guards, aggregation."""
import copy

import pytest

from speechinterp.analysis import findings as F

H, N, U = F.HOLDS, F.NOT, F.UNDECIDED
ENC = (0.90, 0.85, 0.95)   # an accuracy whose interval is above the majority's (0.45, 0.55)
NOTE = (0.50, 0.45, 0.54)  # one at or below it
OVER = (0.58, 0.50, 0.66)  # one that overlaps it


def res(layers, oracle=ENC, subset=(0.89, 0.84, 0.94, 0.05), r20=(0.88, 0.86, 0.93),
        stable=0.9, spk=6, conv=True):
    """One probe result: layers as (acc, lo, hi); subset as (acc, lo, hi, fraction)."""
    lay = [{"name": f"l{i}", "dim": 100, "accuracy": a, "accuracy_ci95": [lo, hi],
            "accuracy_seed_sd": 0.0, "f1_macro": a, "control_accuracy": 0.5, "selectivity": a - .5}
           for i, (a, lo, hi) in enumerate(layers)]
    n = len(layers) * 100
    return {"task": "p", "classes": ["a", "b"], "probe_setting": "default",
            "majority_accuracy": 0.5, "majority_accuracy_ci95": [0.45, 0.55],
            "split_sizes": {"train": 100, "dev": 50, "test": 50},
            "speakers_per_class": {s: {"a": spk, "b": spk} for s in ("train", "dev", "test")},
            "layers": lay,
            "oracle": {"accuracy": oracle[0], "accuracy_ci95": list(oracle[1:]), "f1_macro": 0},
            "minimal_subset": {"delta": 0.01, "size": int(subset[3] * n), "fraction": subset[3],
                               "accuracy": subset[0], "accuracy_ci95": list(subset[1:3]),
                               "neurons": [], "per_layer": {"l0": 1, "l1": 1}},
            "ablation": {"retrain": {"random": {"20": r20[0]}}},
            "ablation_ci95": {"retrain": {"random": {"20": list(r20[1:])}}},
            "ranking_stability": {"seeds": 3, "top1_overlap": stable, "top5_overlap": stable},
            "convergence": {"ok": conv, "below_majority": [] if conv else ["l0"],
                            "oracle_below_best_layer": False}}


def enc(kind="pretrained", family="whisper", probes=None, learned=None, trained_for=None,
        random=False):
    e = {"kind": kind, "random": random, "family": family, "probes": probes or {}}
    if trained_for:
        e["trained_for"] = trained_for
    if learned is not None:
        e["task_model"] = {"property": trained_for, "test_accuracy": 0.9 if learned else 0.16,
                           "test_accuracy_ci95": [0.85, 0.95] if learned else [0.1, 0.2],
                           "majority_accuracy": 0.14, "random_test_accuracy": 0.15,
                           "random_test_accuracy_ci95": [0.1, 0.2], "learned": learned}
    return e


def finding(summary, i):
    return F.evaluate(summary)[i - 1]


def outcome(summary, i):
    return finding(summary, i)["outcome"]


def one(i, name="x", **kw):
    return {"encoders": {name: enc(**kw)}}


# ----------------------------------------------------------------------------- 1, 2
@pytest.mark.parametrize("layers,want", [([ENC] * 4, H), ([NOTE] * 4, N),
                                         ([ENC, OVER, OVER, NOTE], U)])
def test_distributed(layers, want):
    for i, prop in ((1, "channel"), (2, "gender")):
        s = {"encoders": {"x": enc(probes={prop: res(layers)})}}
        assert outcome(s, i) == want
        assert finding(s, i)["holds"] == F._AS_BOOL[want]


def test_distributed_guards_and_random_copies():
    s = {"encoders": {"x": enc(probes={"gender": res([ENC] * 4)}),
                      "x_random": enc(probes={"gender": res([NOTE] * 4)}, random=True)}}
    f = finding(s, 2)
    assert f["outcome"] == H and set(f["per_encoder"]) == {"x"}   # the random copy: not about it
    s["encoders"]["x"]["probes"]["gender"] = res([ENC] * 4, spk=2)
    f = finding(s, 2)
    assert f["outcome"] == U and "not testable" in f["per_encoder"]["x"]["why"]
    s["encoders"]["x"]["probes"]["gender"] = res([ENC] * 4, conv=False)
    assert "convergence" in finding(s, 2)["per_encoder"]["x"]["why"]
    assert outcome({"encoders": {"x": enc(probes={})}}, 1) == U      # property missing
    spk = dict(res([ENC] * 4, spk=1), task="speaker")      # one speaker per class: by design
    assert F.probe_problem(spk, "speaker") is None


# ----------------------------------------------------------------------------- 3
@pytest.mark.parametrize("r20,want", [((0.9, 0.87, 0.93), H), ((0.6, 0.55, 0.65), N),
                                      ((0.85, 0.80, 0.90), U)])
def test_redundant(r20, want):
    # oracle 0.9, majority 0.5: the 90%-of-gain target is 0.86
    s = {"encoders": {"x": enc(probes={"gender": res([ENC] * 2, r20=r20)})},
         "redundancy": {"x": {"clusters": 40, "neurons": 200}}}
    f = finding(s, 3)
    assert f["outcome"] == want and "x/gender" in f["per_encoder"]
    assert "40 correlation clusters" in f["evidence"]


# ----------------------------------------------------------------------------- 4
def _dialect(cnn_layers, other_layers, learned=True):
    return {"encoders": {
        "cnn_accent": enc("task_cnn", "cnn", {"accent": res(cnn_layers)}, learned, "accent"),
        "whisper": enc(probes={"accent": res(other_layers)})}}


def test_dialect_outcomes():
    low = (0.6, 0.56, 0.64)
    f = finding(_dialect([NOTE, OVER, ENC, ENC], [low] * 2), 4)
    assert f["outcome"] == H and set(f["per_encoder"]) == {"cnn_accent"}
    assert "upper half" in f["evidence"] and "whisper best l0 0.600" in f["evidence"]
    assert outcome(_dialect([NOTE] * 4, [NOTE] * 2), 4) == N          # the CNN encodes nothing
    assert outcome(_dialect([ENC, ENC, NOTE, NOTE], [NOTE] * 2), 4) == N  # lower layers only
    assert outcome(_dialect([NOTE, OVER, low, low], [ENC] * 2), 4) == N  # another encodes more
    f = finding(_dialect([NOTE, OVER, ENC, ENC], [(0.88, 0.8, 0.96)] * 2), 4)
    assert f["outcome"] == U and "overlap" in f["per_encoder"]["cnn_accent"]["why"]
    s = _dialect([NOTE, OVER, ENC, ENC], [low] * 2)
    del s["encoders"]["whisper"]
    assert outcome(s, 4) == U                                         # nothing to compare with


# ----------------------------------------------------------------------------- 5
@pytest.mark.parametrize("subset,stable,want", [
    ((0.89, 0.84, 0.94, 0.05), 0.9, H), ((0.89, 0.84, 0.94, 0.30), 0.9, N),
    ((0.6, 0.5, 0.7, 0.02), 0.9, N), ((0.89, 0.84, 0.94, 0.05), 0.2, U),
    ((0.85, 0.52, 0.95, 0.05), 0.9, U)])
def test_minimal_subsets(subset, stable, want):
    s = {"encoders": {"x": enc(probes={"gender": res([ENC] * 2, subset=subset,
                                                     stable=stable)})}}
    f = finding(s, 5)
    assert f["outcome"] == want
    assert "top-5%" in f["evidence"]          # the ranking stability is stated


# ----------------------------------------------------------------------------- 6
def _overlap(shared, stable=0.9, props=("gender", "channel")):
    p = {q: res([ENC] * 2, stable=stable) for q in props}
    a, b = 10, 10
    return {"encoders": {"x": enc(probes=p)},
            "overlap": {"x": {"names": list(props), "shared": [[a, shared], [shared, b]],
                              "jaccard": [[1, 0], [0, 1]]}}}


def test_shared_neurons():
    # 200 neurons, two subsets of 10: chance overlap is 0.5 neurons
    f = finding(_overlap(6), 6)
    assert f["outcome"] == H and "top-5%" in f["evidence"]
    assert outcome(_overlap(0), 6) == N
    assert outcome(_overlap(1), 6) == U                               # at chance level
    f = finding(_overlap(6, stable=0.1), 6)
    assert f["outcome"] == U and "unstable" in f["per_encoder"]["x"]["why"]


# ----------------------------------------------------------------------------- 7
def _bias(gap, drop, learned=True, spk=6):
    return {"encoders": {"cnn_accent": enc("task_cnn", "cnn", {"gender": res([ENC] * 2)},
                                           learned, "accent")},
            "bias": {"cnn_accent": {
                "task": "accent", "protected": "gender", "masked_neurons": 3, "utterances": 60,
                "accuracy": {"female": 0.8, "male": 0.7, "all": 0.75, "gap": 0.1},
                "masked": {}, "random_masked": {}, "masked_drop": {"gap": 0.0},
                "counts": {"female": {"utterances": 30, "speakers": spk},
                           "male": {"utterances": 30, "speakers": spk}},
                "accuracy_ci95": {"female": [0.7, 0.9], "male": [0.6, 0.8]},
                "gap_ci95": gap, "masked_drop_gap_ci95": drop}}}


def test_gender_bias():
    assert outcome(_bias([0.02, 0.18], [-0.01, 0.01]), 7) == H
    assert outcome(_bias([-0.03, 0.04], [-0.01, 0.02]), 7) == N
    assert outcome(_bias([-0.1, 0.2], [-0.01, 0.01]), 7) == U
    f = finding(_bias([0.02, 0.18], [-0.01, 0.01]), 7)
    assert "n=30, 6 speakers" in f["evidence"] and "[0.020, 0.180]" in f["evidence"]
    f = finding(_bias([0.02, 0.18], [-0.01, 0.01], spk=2), 7)
    assert f["outcome"] == U and "not testable: female has 2" in f["evidence"]
    s = _bias([0.02, 0.18], [-0.01, 0.01])
    s["bias"]["cnn_accent"]["counts"] = {"female": 30, "male": 30}   # plain counts also read
    assert outcome(s, 7) == H


# ----------------------------------------------------------------------------- 8
def test_speaker_invariant_only_about_pretrained_transformers():
    crepe = enc(family="crepe", probes={"language": res([NOTE] * 3)})
    s = {"encoders": {"whisper": enc(probes={"language": res([NOTE, ENC])}), "crepe": crepe}}
    f = finding(s, 8)
    assert f["outcome"] == H and set(f["per_encoder"]) == {"whisper"}
    s["encoders"]["whisper"]["probes"]["language"] = res([NOTE, NOTE])
    assert outcome(s, 8) == N
    s["encoders"]["whisper"]["probes"]["language"] = res([NOTE, OVER])
    assert outcome(s, 8) == U
    assert "no pretrained Transformer" in finding({"encoders": {"crepe": crepe}}, 8)["why"]


# ----------------------------------------------------------------------------- 9
def _competitive(cnn_layers, t_layers, learned=True, family="wav2vec2"):
    return {"encoders": {
        "cnn_gender": enc("task_cnn", "cnn", {"gender": res(cnn_layers)}, learned, "gender"),
        "wav2vec2_base": enc(family=family, probes={"gender": res(t_layers)}),
        "wav2vec2_base_random": enc(family=family, probes={"gender": res(t_layers)},
                                    random=True)}}


def test_wav2vec2_family_counts_as_transformer_via_the_registry():
    s = _competitive([ENC], [(0.88, 0.84, 0.92)])
    assert "architecture" not in s["encoders"]["wav2vec2_base"]
    f = finding(s, 9)
    assert f["outcome"] == H and "wav2vec2_base" in f["evidence"]
    assert "wav2vec2_base_random" not in f["evidence"]
    assert outcome(_competitive([ENC], [ENC], family="ge2e"), 9) == U   # an LSTM: no Transformer


def test_cnn_competitive_outcomes():
    assert outcome(_competitive([(0.6, 0.55, 0.65)], [ENC]), 9) == N
    assert outcome(_competitive([(0.8, 0.7, 0.9)], [ENC]), 9) == U     # overlap the margin
    f = finding(_competitive([(0.88, 0.84, 0.92)], [ENC]), 9)
    assert f["outcome"] == U and "difference 0.020 [-0.044, 0.084]" in f["evidence"]


def test_task_model_that_did_not_learn_gives_undecided():
    for s, i in ((_dialect([NOTE, OVER, ENC, ENC], [NOTE] * 2, learned=False), 4),
                 (_bias([0.02, 0.18], [-0.01, 0.01], learned=False), 7),
                 (_competitive([ENC], [(0.88, 0.84, 0.92)], learned=False), 9)):
        f = finding(s, i)
        assert f["outcome"] == U and f["holds"] is None
        assert "did not learn its task (test acc 0.160" in f["evidence"]
    s = _competitive([ENC], [ENC])
    del s["encoders"]["cnn_gender"]["task_model"]                      # missing: not learned
    assert outcome(s, 9) == U


# ----------------------------------------------------------------------------- aggregation
def test_aggregation_never_turns_undecided_into_yes_or_no():
    h, n, u = {"outcome": H, "why": ""}, {"outcome": N, "why": ""}, {"outcome": U, "why": ""}
    assert F.aggregate({"a": h, "b": u})[0] == H
    assert F.aggregate({"a": n, "b": u})[0] == N
    assert F.aggregate({"a": h, "b": n}) == (U, "mixed: 1 hold, 1 do not hold")
    assert F.aggregate({"a": u}) == (U, "no encoder decided")
    assert F.aggregate({})[0] == U


def test_old_results_without_intervals_never_crash():
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not k.endswith("_ci95")
                    and k not in ("task_model", "ranking_stability", "convergence",
                                  "speakers_per_class", "counts")}
        return [strip(x) for x in d] if isinstance(d, list) else d
    s = copy.deepcopy(_dialect([NOTE, OVER, ENC, ENC], [ENC] * 2))
    s["encoders"].update(_competitive([ENC], [ENC])["encoders"])
    s.update({k: v for k, v in _bias([0.02, 0.18], [-0.01, 0.01]).items() if k == "bias"})
    s.update({k: v for k, v in _overlap(6).items() if k == "overlap"})
    s["encoders"]["x"] = _overlap(6)["encoders"]["x"]
    out = F.evaluate(strip(s))
    assert len(out) == 9
    assert all(f["outcome"] == U for f in out), [(f["finding"], f["outcome"]) for f in out]
    assert all(f["criterion"] and f["about"] for f in out)


def test_paired_gain_interval_decides_layers_where_unpaired_intervals_overlap():
    r = {"majority_accuracy": 0.5, "majority_accuracy_ci95": [0.3, 0.7]}
    # accuracy interval overlaps the majority's, but the paired gain is above 0: encoded
    layer = {"accuracy": 0.62, "accuracy_ci95": [0.45, 0.8], "gain_ci95": [0.04, 0.2]}
    assert F.layer_state(layer, r) == "encoded"
    assert F.layer_state({**layer, "gain_ci95": [-0.03, 0.04]}, r) == "not encoded"
    assert F.layer_state({**layer, "gain_ci95": [-0.03, 0.2]}, r) == "undecided"
    # without a gain interval: the unpaired comparison (here undecided)
    assert F.layer_state({k: v for k, v in layer.items() if k != "gain_ci95"}, r) == "undecided"
