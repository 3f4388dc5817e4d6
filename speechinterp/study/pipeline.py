"""The whole study of docs/method.md as one function, ``run(config, workdir)``.

In the spirit of Flax's ``train_and_evaluate``: ``experiments/run_study.py`` parses its flags
and calls :func:`run`; tests and notebooks can call it too. The path of one encoder: its
``pretrained`` / ``task_cnns`` entry -> :func:`stages.pretrained_encoders` or
:func:`stages.trained_task_cnns` (an :class:`EncoderRun`) -> :func:`stages.random_copies` ->
:func:`stages.extracted` (its store) -> :func:`stages.probed` (its probes) ->
:func:`analyses.corpus_summary` (EER, overlap, bias, task model, findings) -> the report's
sections (:mod:`speechinterp.analysis.report`), written by :func:`write_outputs`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

from speechinterp.study import analyses, stages
from speechinterp.study.cache import StageCache
from speechinterp.study.records import RecordedCorpus, StudySummary
from speechinterp.study.stages import Context, Corpus


def encoder_runs(ctx: Context, corpus: Corpus) -> dict:
    """Every encoder of the study with its store and probes on the main corpus: the converted
    checkpoints, the trained task CNNs and (``random_baselines``) their random copies."""
    runs = stages.pretrained_encoders(ctx)
    runs.update(stages.trained_task_cnns(ctx, corpus))
    if ctx.config.random_baselines:
        runs.update(stages.random_copies(ctx, runs))
    runs = stages.extracted(ctx, stages.with_architectures(runs), corpus)
    return stages.probed(ctx, runs)


def recorded_corpus(ctx: Context) -> tuple[Corpus | None, RecordedCorpus]:
    """The recorded-speech corpus (``build_corpus --source=recorded``) and its status, sources
    and testable properties; (None, status) with the reason when it cannot be built."""
    cfg, rc = ctx.config, ctx.config.recorded
    inputs = {"max_per_speaker": rc.max_per_speaker, "seed": cfg.seed, "sources": rc.sources}
    try:
        st = ctx.cache.run("corpus_recorded", inputs, lambda d: ctx.script(
            "build_corpus", "--source=recorded", f"--out={d}", f"--cache={ctx.path('cache')}",
            f"--seed={cfg.seed}", f"--max_per_speaker={rc.max_per_speaker}",
            *([f"--sources={rc.sources}"] if rc.sources else [])))
    except RuntimeError as e:
        return None, RecordedCorpus(status=f"unavailable: {e}")
    with open(st.path("sources.json")) as f:
        sources = json.load(f)["sources"]
    with open(st.path("testable.json")) as f:
        testable = {p: [v["testable"], v["counts"]] for p, v in json.load(f).items()
                    if isinstance(v, dict) and "testable" in v}
    return (Corpus(st.path("utterances.csv"), st.key),
            RecordedCorpus(status="ok", sources=tuple(sources),
                           corpus_manifest=st.path("utterances.csv"), testable=testable))


def recorded_study(ctx: Context, main: StudySummary) -> RecordedCorpus:
    """The same encoders (the task CNNs as trained on the main corpus) extracted and probed on
    recorded human speech, for the properties it can test (every class with at least 3
    speakers; speaker identity as ``speaker_id``); random copies only with
    ``recorded.random_baselines``. The task models are the main corpus's."""
    cfg = ctx.config
    corpus, rec = recorded_corpus(ctx)
    if corpus is None:
        ctx.log(f"[study] recorded corpus {rec.status}")
        return rec
    for s in rec.sources:
        if s.get("status") != "ok":
            ctx.log(f"[study] recorded source {s['name']} skipped: {s['status']}")
    props = [p for p in cfg.recorded.properties
             if rec.testable.get("speaker" if p == "speaker_id" else p, [False])[0]]
    runs = {n: r.unprobed() for n, r in main.encoders.items()
            if cfg.recorded.random_baselines or not r.random}
    runs = stages.extracted(ctx, runs, corpus, prefix="recorded_")
    runs = stages.probed(ctx, runs, props, prefix="recorded_", seeds=cfg.recorded.seeds)
    task_models = {n: r.task_model for n, r in main.encoders.items() if r.task_model}
    summary = ctx.cache.timed("analysis_recorded", lambda: analyses.corpus_summary(
        ctx, runs, corpus, bias=False, task_models=task_models))
    return dataclasses.replace(rec, summary=summary)


def run(config, workdir: str, script: Callable[..., None],
        log: Callable[[str], None] = lambda line: None,
        report_stage: Callable[[str, str, float | None], None] | None = None) -> StudySummary:
    """Run the study of ``config`` in ``workdir`` (stages cached under ``workdir/stages``) and
    write its report; returns the summary. ``script(verb, *flags)`` runs a command script
    (``convert``, ``train_encoder``, ``extract``, ``build_corpus``); ``log`` takes progress
    lines and ``report_stage(name, status, seconds)`` each stage's start and end."""
    t0 = time.perf_counter()
    cache = StageCache(workdir, report_stage or (lambda *a: None))
    ctx = Context(config, workdir, cache, script, log)
    corpus = stages.builtin_corpus(ctx)
    runs = encoder_runs(ctx, corpus)
    amnesic = stages.amnesic_results(ctx, runs, corpus)
    main = cache.timed("analysis", lambda: analyses.corpus_summary(ctx, runs, corpus))
    summary = StudySummary(**vars(main), amnesic=amnesic, corpus_manifest=corpus.manifest,
                           config=config.to_dict())
    if config.recorded.enabled:
        summary = summary.replace(recorded=recorded_study(ctx, summary))
    summary = summary.replace(stage_times_s=dict(cache.times),
                              total_time_s=time.perf_counter() - t0)
    write_outputs(workdir, summary)
    return summary


def write_outputs(workdir: str, summary: StudySummary) -> None:
    """``figures/*.png``, ``report.md``, ``report.html`` and, last, ``results.json`` in
    ``workdir``, each written atomically (``speechinterp.artefacts``)."""
    from speechinterp import artefacts
    from speechinterp.analysis import plots, report
    fig_dir = os.path.join(workdir, "figures")
    figs = plots.study_figures(summary)
    for name, fig in figs.items():
        artefacts.save_figure(fig, os.path.join(fig_dir, name), dpi=110)
        plots.plt.close(fig)
    md = report.markdown(summary, sorted(figs))
    artefacts.write_text(os.path.join(workdir, "report.md"), md)
    artefacts.write_text(os.path.join(workdir, "report.html"), report.html_page(md, fig_dir))
    artefacts.write_json(os.path.join(workdir, "results.json"), summary.to_json(), default=str)
