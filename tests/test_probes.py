"""The vectorised probing engine on stores with a planted signal (issue 2).

The planted store: ``prop`` (3 classes, random per utterance) is carried only by neurons
3, 7, 11 of layer_1; every layer carries a per-speaker offset plus noise; splits are
speaker-disjoint (there is a speaker column and the task is not speaker identity).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from speechinterp import synthetic
from speechinterp.probes import data as D
from speechinterp.probes import elastic_net as EN
from speechinterp.probes import engine as E
from speechinterp.probes import protocol, ranking

PLANTED = (3, 7, 11)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("planted"))
    return synthetic.planted_store(d, num_utterances=1500, num_speakers=50, dims=(24, 48, 40),
                                   signal_layer=1, signal_neurons=PLANTED, strength=4.0)


@pytest.fixture(scope="module")
def run(planted):
    return protocol.run_probing(planted, "prop", EN.DEFAULT, seed=0)


def test_results_have_exactly_the_design_keys(run):
    res, _ = run
    assert set(res) == {"task", "classes", "probe_setting", "majority_accuracy",
                        "majority_accuracy_ci95", "split_sizes", "speakers_per_class",
                        "interval", "layers", "oracle", "ranking", "ranking_stability",
                        "minimal_subset", "ablation", "ablation_ci95", "convergence"}
    assert res["probe_setting"] == "default"
    assert set(res["layers"][0]) == {"name", "dim", "accuracy", "accuracy_ci95",
                                     "accuracy_seed_sd", "gain_ci95", "f1_macro",
                                     "control_accuracy", "control_accuracy_ci95", "selectivity"}
    assert set(res["minimal_subset"]) == {"delta", "size", "fraction", "accuracy",
                                          "accuracy_ci95", "neurons", "per_layer"}
    assert set(res["oracle"]) == {"accuracy", "accuracy_ci95", "accuracy_seed_sd", "gain_ci95",
                                  "f1_macro"}
    # the gain over the majority is a paired interval: inside the unpaired difference's range
    for l in res["layers"] + [res["oracle"]]:
        lo, hi = l["gain_ci95"]
        assert lo <= l["accuracy"] - res["majority_accuracy"] + 1e-9 <= hi + 2e-9
    assert set(res["ablation"]) == set(res["ablation_ci95"]) == {"retrain", "zero_out"}
    for mode, cis in zip(res["ablation"].values(), res["ablation_ci95"].values()):
        assert set(mode) == set(cis) == {"top", "random", "bottom"}
        assert list(mode["top"]) == list(cis["top"]) == ["1", "5", "10", "15", "20", "50"]
    assert len(res["ranking"]) == 24 + 48 + 40
    # every accuracy lies inside its own interval
    pairs = [(l["accuracy"], l["accuracy_ci95"]) for l in res["layers"]]
    pairs += [(res[k]["accuracy"], res[k]["accuracy_ci95"]) for k in ("oracle", "minimal_subset")]
    pairs.append((res["majority_accuracy"], res["majority_accuracy_ci95"]))
    for mode in ("retrain", "zero_out"):
        for how, accs in res["ablation"][mode].items():
            pairs += [(a, res["ablation_ci95"][mode][how][p]) for p, a in accs.items()]
    for acc, (lo, hi) in pairs:
        assert lo <= acc + 1e-9 and acc - 1e-9 <= hi and hi - lo < 0.5, (acc, lo, hi)
    assert res["interval"]["resampled"] == "test speakers"


def test_right_layer_wins_and_noise_layers_stay_near_chance(run):
    res, _ = run
    acc = [l["accuracy"] for l in res["layers"]]
    assert int(np.argmax(acc)) == 1
    assert acc[1] > 0.85
    for k in (0, 2):
        assert abs(acc[k] - res["majority_accuracy"]) < 0.08, acc


def test_selectivity_high_with_signal_and_near_zero_without(run):
    res, _ = run
    sel = [l["selectivity"] for l in res["layers"]]
    assert sel[1] > 0.45
    assert all(abs(sel[k]) < 0.1 for k in (0, 2)), sel
    for l in res["layers"]:  # control labels per speaker, test speakers unseen: near chance
        assert l["control_accuracy"] < 0.5
        assert l["selectivity"] == pytest.approx(l["accuracy"] - l["control_accuracy"])


def test_control_task_is_learned_where_it_can_be(tmp_path):
    """With the test speakers also in training (an utterance-level split column) and strong
    per-speaker offsets, the per-speaker control labels are learnable, and the probe learns
    them: a control test that cannot fail for a probe that learned nothing."""
    from speechinterp import store
    arrays, rows = synthetic.planted_arrays(num_utterances=600, num_speakers=10, dims=(32, 32),
                                            signal_layer=1, speaker_scale=4.0, seed=1)
    for i, r in enumerate(rows):
        r["split"] = ("train", "train", "train", "dev", "test")[(i // 10) % 5]   # all speakers
    st = store.write_store(str(tmp_path), "ctrl", ["layer_0", "layer_1"], arrays, rows)
    res, _ = protocol.run_probing(st, "prop", EN.DEFAULT, layerwise_only=True)
    for l in res["layers"]:
        assert l["control_accuracy"] > res["majority_accuracy"] + 0.3, l
        assert l["selectivity"] == pytest.approx(l["accuracy"] - l["control_accuracy"])


def test_planted_neurons_lead_both_rankings(run):
    res, det = run
    planted = {(1, j) for j in PLANTED}
    assert {tuple(x) for x in res["ranking"][:3]} == planted
    assert {tuple(x) for x in det["ranking_by_neuron_accuracy"][:3]} == planted


def test_minimal_subset_is_small_and_in_the_signal_layer(run):
    res, _ = run
    ms = res["minimal_subset"]
    assert ms["fraction"] <= 0.1  # a handful of the 112 neurons
    assert ms["per_layer"]["layer_1"] >= 3
    assert ms["accuracy"] >= res["oracle"]["accuracy"] - 0.05


def test_top_beats_random_beats_bottom(run):
    res, _ = run
    for mode in ("retrain", "zero_out"):
        ab = res["ablation"][mode]
        for pct in ("5", "10"):
            assert ab["top"][pct] > ab["random"][pct] + 0.2, (mode, pct, ab)
        # averaged over k, random keeps more signal than bottom (bottom never holds a
        # planted neuron; random sometimes does)
        mean = {h: np.mean([ab[h][p] for p in ("10", "15", "20", "50")]) for h in ab}
        assert mean["top"] > mean["random"] > mean["bottom"], (mode, mean)


def test_accuracy_matches_sklearn_elastic_net(planted):
    td = D.prepare_task(planted, "prop", 0)
    layers = D.load_layers(planted, td)
    tr, te = td.split == D.TRAIN, td.split == D.TEST
    cfg = EN.ProbeConfig(epochs=40, batch_size=256, learning_rate=1e-2, lr_schedule="cosine",
                         lambdas=((1e-4, 1e-4),))
    w = jnp.asarray(tr.astype(np.float32))
    for k in (0, 1):
        X = layers[k]
        p = EN.fit_probe(jnp.asarray(X), jnp.asarray(td.y), w, jnp.ones(X.shape[1]), 1e-4, 1e-4,
                         jax.random.PRNGKey(0), num_classes=3, num_train=int(tr.sum()), cfg=cfg)
        ours = np.mean(np.asarray(EN.predict(p, jnp.asarray(X[te]))) == td.y[te])
        sk = LogisticRegression(l1_ratio=0.5, solver="saga", C=10.0, max_iter=3000, tol=1e-5)
        sk.fit(X[tr], td.y[tr])
        theirs = sk.score(X[te], td.y[te])
        assert abs(ours - theirs) <= 0.02, (k, ours, theirs)


def _one_interval(d, lambdas):
    """Probes on all d columns, one per (l1, l2)."""
    G = len(lambdas)
    return E.ProbeSpecs(np.zeros(G), np.full(G, d), np.zeros(G), [a for a, _ in lambdas],
                        [b for _, b in lambdas])


def _train_first(X, y, split):
    """Rows reordered training rows first (the engine's order): X, y, split, num_train."""
    order = np.argsort(split != 0, kind="stable")
    return X[order], y[order], split[order], int(np.sum(split == 0))


def _fit_default_grid(X, y, split, cfg=EN.DEFAULT):
    """A setting through the engine: its lambda grid in one call, the lambda chosen on dev;
    returns the test accuracy."""
    X, y, split, ntr = _train_first(X, y, split)
    pred = E.fit(X, y[None], _one_interval(X.shape[1], cfg.lambdas), num_train=ntr,
                 num_classes=int(y.max()) + 1, cfg=cfg).predictions[0]     # [G, N_eval]
    ys, se = y[ntr:], split[ntr:]
    g = int(np.argmax([np.mean(p[se == 1] == ys[se == 1]) for p in pred]))
    return float(np.mean(pred[g][se == 2] == ys[se == 2]))


def test_default_setting_converges_to_sklearn_accuracy():
    # a small separable problem: 4 classes carried by 6 of 40 standardised features
    rng = np.random.default_rng(5)
    n, C = 1200, 4
    y = rng.integers(0, C, n)
    X = rng.normal(size=(n, 40))
    X[:, :6] += 2.0 * rng.normal(size=(C, 6))[y]
    split = rng.choice(3, size=n, p=(0.6, 0.2, 0.2))
    X = D.standardize(X, split == 0)
    ours = _fit_default_grid(X, y, split)
    sk = LogisticRegression(C=1.0, max_iter=5000).fit(X[split == 0], y[split == 0])
    theirs = sk.score(X[split == 2], y[split == 2])
    assert theirs > 0.9, theirs                    # the problem is (nearly) separable
    assert ours >= theirs - 0.03, (ours, theirs)
    # the NeuroX setting's 10 epochs at lr 1e-3 stop short of that (0.91 vs 0.99 here)
    neurox = _fit_default_grid(X, y, split, EN.NEUROX)
    assert neurox < ours - 0.03, (neurox, ours)


def _toy_problem(n, d, classes, tasks):
    """Random X [n, d], labels Y [tasks, n], the first ~70% of rows for training, their
    count."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = rng.integers(0, classes, (tasks, n)).astype(np.int32)
    return X, Y, int(0.7 * n)


def _check_engine_equals_fit_probe(specs, band_cost, cfg=None, devices=None):
    """The engine trains every probe of ``specs`` exactly as fit_probe does one at a time,
    from the same initial weights and batch plan."""
    N, C, K = 300, 3, 20
    X, Y, ntr = _toy_problem(N, K, C, 2)
    cfg = cfg or dataclasses.replace(EN.NEUROX_EXACT, epochs=3, learning_rate=1e-2)
    trained = E.fit(X, Y, specs, num_train=ntr, num_classes=C, cfg=cfg, seed=1,
                    devices=devices, band_cost=band_cost)
    w = jnp.asarray((np.arange(N) < ntr).astype(np.float32))
    key = E.seed_keys(1, 1)[0]
    fit = jax.jit(lambda Xs, y, l1, l2, p0: EN.fit_probe(
        Xs, y, w, jnp.ones(Xs.shape[1]), l1, l2, key, num_classes=C, num_train=ntr, cfg=cfg,
        init_params=p0))
    lo, hi = specs.lo, specs.hi
    for g in trained.job.groups:
        assert np.array_equal(EN.probe_fan_in(g.bands), hi[g.probes] - lo[g.probes])
        P0 = jax.tree.map(lambda a: a[0], E.initial_params(g.bands, specs, g.probes, C, cfg,
                                                           1, 1))
        for q, p in enumerate(g.probes):
            W0 = EN.probe_weights(P0, g.bands, q, K)
            assert np.all(W0[:lo[p]] == 0) and np.all(W0[hi[p]:] == 0)
            assert np.all(np.abs(W0[lo[p]:hi[p]]) <= 1 / np.sqrt(hi[p] - lo[p]))
            ref = fit(X[:, lo[p]:hi[p]], Y[specs.label[p]], specs.l1[p], specs.l2[p],
                      {"W": jnp.asarray(W0[lo[p]:hi[p]]), "b": jnp.asarray(P0["b"][q])})
            Wp, bp = trained.weights(p)
            np.testing.assert_allclose(Wp[lo[p]:hi[p]], ref["W"], atol=2e-6)
            assert np.all(Wp[:lo[p]] == 0) and np.all(Wp[hi[p]:] == 0)   # masked stay 0
            np.testing.assert_allclose(bp, ref["b"], atol=2e-6)
            pred = np.asarray(EN.predict(ref, jnp.asarray(X[ntr:, lo[p]:hi[p]])))
            assert np.mean(trained.predictions[0, p] == pred) > 0.99
    assert trained.predictions.shape == (1, len(specs), N - ntr)
    return trained


def test_band_engine_equals_one_probe_at_a_time():
    # layers of different widths with two labels and two lambdas, an oracle on all of them,
    # nested prefixes and suffixes (bands shared across probes, padded heads): one call ==
    # fit_probe one probe at a time, from the same initial weights
    lam = np.array([1e-3, 1e-2], np.float32)
    s = protocol.layer_probes([8, 6, 6], lam, lam)
    s = E.ProbeSpecs.concat(s, E.ProbeSpecs([4, 4, 4, 17, 10], [7, 11, 16, 20, 20],
                                            [0, 0, 0, 1, 1], [1e-3] * 5, [1e-3] * 5))
    bands = _check_engine_equals_fit_probe(s, band_cost=1.0).job.groups[0].bands
    assert len(bands.layout) > 3 and any(m is not None for m in bands.masks)
    # equal-width layers: one stacked band (the oracle summed over the stack)
    bands = _check_engine_equals_fit_probe(protocol.layer_probes([5, 5, 5, 5], lam, lam),
                                           band_cost=1.0).job.groups[0].bands
    assert [S for _, _, S, _ in bands.layout] == [4]


def _bands(specs):
    return EN.interval_bands(specs.lo, specs.hi, specs.label, specs.l1, specs.l2)


def test_interval_bands_pad_little_and_share_columns():
    ntot = 9984
    sizes = ranking.minimal_subset_sizes(ntot)
    pcts = [max(1, int(round(p / 100 * ntot))) for p in protocol.ABLATION_PCTS]
    lay = protocol.subset_probes(np.union1d(sizes, pcts), pcts, ntot)
    lo, hi, bottom, rand = lay.specs.lo, lay.specs.hi, lay.bottom_ids[0], lay.random_ids
    assert np.array_equal(hi[bottom] - lo[bottom], pcts) and np.all(hi[bottom] == ntot)
    assert np.array_equal(hi[rand] - lo[rand], pcts) and np.all(lo[rand] == ntot)
    bands = EN.interval_bands(lo, hi, np.zeros(len(lo)), lo * 0, lo * 0)
    trained = sum(w * S * max(h1 for _, h1, _, _ in runs) for _, w, S, runs in bands.layout)
    exact = int(np.sum(hi - lo))
    assert len(bands.layout) <= 16 and trained < 1.25 * exact
    # every band's probes are one run of consecutive indices: one pad-and-add per band
    assert all(len(runs) == 1 for _, _, _, runs in bands.layout)
    # layers: one band per layer, shared by its probes and the oracle; equal-width layers are
    # one stacked band (layer k's probes 2k, 2k+1; the oracle, probe 6, sums over the stack)
    lb = _bands(protocol.layer_probes([768] * 3, np.ones(1), np.ones(1)))
    assert lb.layout == ((0, 768, 3, ((0, 2, 0, 2), (2, 3, 6, 0))),) and lb.masks == (None,)
    lb = _bands(protocol.layer_probes([768, 1024, 1024], np.ones(1), np.ones(1)))
    assert [(s, w, S) for s, w, S, _ in lb.layout] == [(0, 768, 1), (768, 1024, 2)]


def test_neurox_setting_also_finds_the_layer(planted):
    res, _ = protocol.run_probing(planted, "prop", EN.NEUROX, per_neuron=False)
    acc = [l["accuracy"] for l in res["layers"]]
    assert int(np.argmax(acc)) == 1 and acc[1] > 0.7  # 10 epochs at lr 1e-3 underfit a little


def test_seeds_give_error_bars(planted):
    res, det = protocol.run_probing(planted, "prop", EN.NEUROX, seeds=3, per_neuron=False)
    spread = det["layer_seed_spread"]
    assert len(spread) == 3
    assert any(s["accuracy_std"] > 0 for s in spread)  # different seeds, different minibatches
    for row, sp in zip(res["layers"], spread):
        assert row["accuracy_seed_sd"] == sp["accuracy_std"]


def test_streamed_protocol_agrees_with_in_memory(planted):
    # a memory budget below the store's size streams every stage from the memory maps; the
    # same batch plans and zero init make the same updates (up to the streamed
    # standardisation statistics, summed in float64)
    cfg = dataclasses.replace(EN.NEUROX, epochs=4)
    mem, det_m = protocol.run_probing(planted, "prop", cfg)
    st, det_s = protocol.run_probing(planted, "prop", cfg, memory_budget_gb=1e-4)
    assert det_s["streamed"] and not det_m["streamed"]
    # per-neuron probes: Newton statistics summed over streamed row chunks
    np.testing.assert_allclose(det_s["neuron_dev_accuracy"], det_m["neuron_dev_accuracy"],
                               atol=0.02)
    assert {n for _, n in det_s["ranking_by_neuron_accuracy"][:3]} == set(PLANTED)
    for a, b in zip(st["layers"] + [st["oracle"]], mem["layers"] + [mem["oracle"]]):
        assert abs(a["accuracy"] - b["accuracy"]) < 0.02, (a, b)
    assert {n for _, n in st["ranking"][:3]} == set(PLANTED)
    assert abs(st["minimal_subset"]["accuracy"] - mem["minimal_subset"]["accuracy"]) < 0.05
    for how in protocol.SELECTIONS:
        for pct, acc in mem["ablation"]["zero_out"][how].items():
            assert abs(st["ablation"]["zero_out"][how][pct] - acc) < 0.05


def test_neurox_setting_starts_like_torch_linear_and_keeps_row_order():
    # NeuroX's probe is a torch nn.Linear (U(+-1/sqrt(fan_in)) init) fed unshuffled batches
    # (NEUROX_EXACT; NEUROX starts from zeros and reshuffles every epoch)
    mask = jnp.asarray(np.r_[np.ones(16), np.zeros(9)].astype(np.float32))
    p = EN.init_probe(25, 4, init="uniform", key=jax.random.PRNGKey(0), feature_mask=mask)
    W = np.asarray(p["W"])
    assert np.all(W[16:] == 0) and np.all(np.abs(W[:16]) <= 0.25) and np.abs(W[:16]).max() > 0.2
    assert np.all(np.abs(np.asarray(p["b"])) <= 0.25)
    w = jnp.asarray(np.r_[0, 1, 1, 0, 1, 1, 1].astype(np.float32))
    cfg = EN.NEUROX_EXACT
    idx, valid, nb = EN.batch_plan(jax.random.PRNGKey(0), w, num_train=5, cfg=cfg)
    assert nb == 1 and np.asarray(idx)[:, :5].tolist() == [[1, 2, 4, 5, 6]] * cfg.epochs
    # random init in the engine: each probe gets fit_probe's updates from its own start
    cfg = dataclasses.replace(EN.NEUROX_EXACT, epochs=2, learning_rate=1e-2)
    trained = _check_engine_equals_fit_probe(
        E.ProbeSpecs([0, 0], [4, 12], [0, 0], [1e-3] * 2, [1e-3] * 2), 3000.0, cfg)
    P0 = E.initial_params(trained.job.groups[0].bands, trained.job.specs, np.arange(2), 3, cfg,
                          1, 1)
    for h, d in enumerate((4, 12)):
        W0 = EN.probe_weights(jax.tree.map(lambda a: a[0], P0), trained.job.groups[0].bands, h,
                              20)
        assert np.all(W0[d:] == 0) and np.abs(W0[:d]).max() > 0.5 / np.sqrt(d)


def test_weight_mass_ordering_follows_neurox():
    # class 0 mass: n2 (0.6), n0 (0.3), n1 (0.1); class 1 mass: n1 (0.9), n3 (0.1)
    W = np.array([[0.3, 0.0], [0.1, 0.9], [0.6, 0.0], [0.0, 0.1]])
    order, cutoffs = ranking.weight_mass_ordering(W, search_stride=10)
    assert order.tolist() == [1, 2, 0, 3]
    # p = 0 takes each class's top neuron; at 70% class 0 needs n0 as well; n3 at 100%
    assert cutoffs[0] == 2 and cutoffs[7] == 3 and cutoffs[10] == 4


def test_selection_and_candidate_sizes():
    order = np.array([5, 3, 1, 0, 2, 4, 6, 7, 8, 9])
    assert ranking.select(order, 0.2, "top").tolist() == [5, 3]
    assert ranking.select(order, 0.2, "bottom").tolist() == [8, 9]
    assert len(ranking.select(order, 0.3, "random", seed=1)) == 3
    sizes = ranking.minimal_subset_sizes(10000)
    assert sizes[0] == 10 and sizes[99] == 1000 and sizes[-1] == 9000 and len(sizes) == 116


def test_splits_are_speaker_disjoint_and_stratified(planted):
    td = D.prepare_task(planted, "prop", 0)
    spk = {i: set(td.groups[td.split == i]) for i in range(3)}
    assert not (spk[0] & spk[1]) and not (spk[0] & spk[2]) and not (spk[1] & spk[2])
    td_s = D.prepare_task(planted, "speaker", 0)   # speaker identity: every speaker everywhere
    assert set(td_s.groups[td_s.split == 2]) == set(td_s.groups)


def test_control_labels_are_fixed_per_speaker(planted):
    td = D.prepare_task(planted, "prop", 0)
    c = D.control_labels(td, 0)
    for g in np.unique(td.groups)[:10]:
        assert len(set(c[td.groups == g])) == 1
    assert len(set(c.tolist())) == 3


SHARDED = r'''
import sys, jax, numpy as np
sys.path.insert(0, sys.argv[2])
from speechinterp import synthetic
from speechinterp.probes import engine as E, protocol, elastic_net as EN
import test_probes as T
devs = jax.devices()
assert len(devs) == 4, devs
store = synthetic.planted_store(sys.argv[1], num_utterances=600, num_speakers=30,
                                dims=(24, 48, 40), signal_layer=1, signal_neurons=T.PLANTED,
                                strength=4.0)
cfg = EN.NEUROX_EXACT
four, det4 = protocol.run_probing(store, "prop", cfg, per_neuron=False)
one, det1 = protocol.run_probing(store, "prop", cfg, per_neuron=False, devices=devs[:1])
assert len(det4["devices"]) == 4 and len(det1["devices"]) == 1, (det4["devices"], det1["devices"])
n_test = four["split_sizes"]["test"]
for a, b in zip(four["layers"] + [four["oracle"], four["minimal_subset"]],
                one["layers"] + [one["oracle"], one["minimal_subset"]]):
    assert abs(a["accuracy"] - b["accuracy"]) <= 1.0 / n_test + 1e-9, (a, b)
assert four["ranking"][:5] == one["ranking"][:5]
for mode in ("retrain", "zero_out"):
    for how in protocol.SELECTIONS:
        for pct, acc in one["ablation"][mode][how].items():
            assert abs(four["ablation"][mode][how][pct] - acc) <= 2.0 / n_test + 1e-9
# the engine's probes: each group's parameters on its own device, every probe exactly as
# fit_probe trains it alone
trained = T._check_engine_equals_fit_probe(
    protocol.layer_probes([8, 6, 6], np.array([1e-3, 1e-2]), np.array([1e-3, 1e-2])), 1.0,
    devices=devs)
held = {d for P in trained.params for leaf in jax.tree.leaves(P) for d in leaf.devices()}
assert held == set(devs), held
print("OK")
'''


def test_probes_spread_over_four_devices_match_one(tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    r = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path / "s"),
                        os.path.dirname(__file__)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_every_ranking_method_in_one_call(planted):
    # --ranking=all five: the first fills the usual keys, the others by_ranking with the same
    # shape; every method puts the planted neurons first and finds a small subset
    cfg = dataclasses.replace(EN.NEUROX, epochs=4)
    res, det = protocol.run_probing(planted, "prop", cfg, rankings=protocol.RANKINGS)
    assert det["ranking_methods"] == list(protocol.RANKINGS)
    assert set(res["by_ranking"]) == set(protocol.RANKINGS[1:])
    for name, r in [("weight_mass", res)] + list(res["by_ranking"].items()):
        assert {n for _, n in r["ranking"][:3]} == set(PLANTED), name
        assert r["minimal_subset"]["size"] <= 12, name
        if name != "weight_mass":
            assert set(r) == {"ranking", "minimal_subset", "ablation", "ablation_ci95"}
            assert r["ablation"]["retrain"]["top"].keys() == res["ablation"]["retrain"][
                "top"].keys()
    agree = res["ranking_agreement"]
    assert len(agree["pairs"]) == 10 and agree["chance"]["top5_overlap"] < 0.06
    assert {n for _, n in agree["voted"][:3]} == set(PLANTED)
    # one method: results.json keeps its keys
    one, _ = protocol.run_probing(planted, "prop", cfg, rankings=("probeless",),
                                  per_neuron=False)
    assert "by_ranking" not in one and "ranking_agreement" not in one
    assert one["ranking"] == res["by_ranking"]["probeless"]["ranking"]
    with pytest.raises(ValueError, match="unknown ranking"):
        protocol.run_probing(planted, "prop", cfg, rankings=("weight",))
