"""Clustered bootstrap intervals (speechinterp.bootstrap) and their use in the probes."""
import numpy as np

from speechinterp import bootstrap as B
from speechinterp.probes import data as D
from speechinterp.probes import elastic_net as EN
from speechinterp.probes import protocol


def _all_or_nothing(num_speakers, per_speaker, seed=0):
    """Correctness that is all-or-nothing per speaker (half of the speakers right)."""
    right = np.random.default_rng(seed).permutation(num_speakers) < num_speakers // 2
    return np.repeat(right, per_speaker).astype(float), np.repeat(np.arange(num_speakers),
                                                                    per_speaker)


def _width(ci):
    return float(ci[1] - ci[0])


def test_interval_width_follows_speakers_not_utterances():
    few_spk_few_utt = _width(B.cluster_bootstrap_ci(*_all_or_nothing(8, 10)))
    few_spk_many_utt = _width(B.cluster_bootstrap_ci(*_all_or_nothing(8, 200)))
    many_spk = _width(B.cluster_bootstrap_ci(*_all_or_nothing(128, 10)))
    # 20x the utterances of the same 8 speakers: the interval stays as wide
    assert abs(few_spk_many_utt - few_spk_few_utt) < 0.1 and few_spk_few_utt > 0.5
    # 16x the speakers: about 4x narrower (1/sqrt(speakers))
    assert 2.5 < few_spk_few_utt / many_spk < 6
    # resampling utterances instead ignores the clustering and is far too narrow
    correct, _ = _all_or_nothing(8, 200)
    assert _width(B.cluster_bootstrap_ci(correct)) < few_spk_many_utt / 4


def test_intervals_are_vectorised_and_paired():
    correct, spk = _all_or_nothing(20, 5)
    both = B.cluster_bootstrap_ci(np.stack([correct, 1 - correct]), spk)
    np.testing.assert_allclose(both[0], B.cluster_bootstrap_ci(correct, spk))
    # the same resamples for every row: complementary rows give mirrored intervals
    np.testing.assert_allclose(both[1], 1 - both[0][::-1])
    assert B.ci_list(both[0]) == [float(both[0][0]), float(both[0][1])]


def test_speaker_task_has_no_control_and_seeds_give_stability(tmp_path):
    from speechinterp import synthetic
    st = synthetic.planted_store(str(tmp_path), num_utterances=600, num_speakers=20,
                                 dims=(8, 16), signal_layer=1, signal_neurons=(2, 5),
                                 strength=4.0)
    assert D.control_is_relabelling(D.prepare_task(st, "speaker"))
    assert not D.control_is_relabelling(D.prepare_task(st, "prop"))
    res, _ = protocol.run_probing(st, "speaker", EN.NEUROX, layerwise_only=True)
    for row in res["layers"]:
        assert row["control_accuracy"] is None and row["selectivity"] is None
        assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
    assert res["probe_setting"] == "neurox"
    res, det = protocol.run_probing(st, "prop", EN.NEUROX, seeds=3, per_neuron=False)
    stab = res["ranking_stability"]
    assert stab["seeds"] == 3 and 0 <= stab["top5_overlap"] <= 1 and -1 <= stab["spearman"] <= 1
    assert len(det["oracle_seed_accuracy"]) == 3 and res["oracle"]["accuracy_seed_sd"] >= 0
    spc = res["speakers_per_class"]
    assert set(spc) == {"train", "dev", "test"} and sum(spc["test"].values()) >= 2
    assert det["probe_setting"] == "neurox" and "ok" in res["convergence"]


def test_convergence_diagnostic_flags_an_oracle_below_the_best_layer():
    res = {"majority_accuracy": 0.5,
           "layers": [{"name": "a", "accuracy": 0.9, "accuracy_ci95": [0.85, 0.95]},
                      {"name": "b", "accuracy": 0.3, "accuracy_ci95": [0.2, 0.4]},
                      {"name": "c", "accuracy": 0.45, "accuracy_ci95": [0.3, 0.6]}],
           "oracle": {"accuracy": 0.7, "accuracy_ci95": [0.6, 0.8]}}
    diag = protocol.convergence_diagnostic(res)
    assert diag == {"ok": False, "below_majority": ["b", "c"],
                    "below_majority_significant": ["b"], "oracle_below_best_layer": True}
    res["layers"] = res["layers"][:1]
    res["oracle"]["accuracy_ci95"] = [0.6, 0.92]
    assert protocol.convergence_diagnostic(res)["ok"]


def _speaker_level_store(path, num_speakers, per_speaker, seed=0):
    """A store whose label is a property of the speaker, carried only by a per-speaker offset:
    a probe's predictions on an unseen speaker are the same for all of its utterances, so its
    errors are all-or-nothing per speaker."""
    from speechinterp import store
    rng = np.random.default_rng(seed)
    label = rng.permutation(np.arange(num_speakers) % 2)
    offsets = rng.normal(0, 1, (num_speakers, 8)) + 0.3 * label[:, None]
    spk = np.repeat(np.arange(num_speakers), per_speaker)
    X = (offsets[spk] + 0.05 * rng.normal(0, 1, (len(spk), 8))).astype(np.float32)
    rows = [{"utt_id": f"u{i}", "path": f"u{i}.wav", "speaker": f"s{s:03d}",
             "prop": f"c{label[s]}"} for i, s in enumerate(spk)]
    return store.write_store(str(path), "speaker-level", ["layer_0"], [X], rows)


def test_store_intervals_follow_test_speakers_not_utterances(tmp_path):
    def width(num_speakers, per_speaker):
        st = _speaker_level_store(tmp_path / f"{num_speakers}_{per_speaker}", num_speakers,
                                  per_speaker)
        res, _ = protocol.run_probing(st, "prop", EN.NEUROX, layerwise_only=True)
        (lo, hi), = [l["accuracy_ci95"] for l in res["layers"]]
        assert res["interval"]["resampled"] == "test speakers"
        return hi - lo, res["interval"]["num_resampled"]

    few, n_few = width(40, 10)
    few_many_utts, n_same = width(40, 80)      # 8x the utterances of the same speakers
    many, n_many = width(320, 10)               # 8x the speakers
    assert n_few == n_same and n_many > 6 * n_few
    assert abs(few_many_utts - few) < 0.5 * few      # as wide: the speakers did not change
    assert many < 0.6 * few                          # narrower: ~1/sqrt(8) as many speakers
