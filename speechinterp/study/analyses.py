"""One corpus's analyses over its probed encoders, and the findings (computed once per corpus).

Each analysis lives in its module of :mod:`speechinterp.analysis` and works on one store or
one encoder; the functions here run it over the study's encoders and return name -> result.
"""
from __future__ import annotations

from typing import Mapping

from speechinterp.study.records import CorpusSummary, EncoderRun, random_copy_of
from speechinterp.study.stages import Context, Corpus, Runs


def speaker_verification(ctx: Context, runs: Runs) -> dict[str, dict]:
    """EER per layer of every store that names speakers (``analysis.verification``)."""
    from speechinterp import store as S
    from speechinterp.analysis.verification import store_eers
    cfg, out = ctx.config, {}
    for name, run in runs.items():
        eer = store_eers(S.open_store(run.store), cfg.verification.max_trials, cfg.seed)
        if eer is not None:
            out[name] = eer
    return out


def overlap_and_redundancy(runs: Runs) -> tuple[dict, dict]:
    """Salient-neuron overlap between properties and the store's redundancy, for every real
    encoder probed for two properties or more (``analysis.neurons``)."""
    from speechinterp import store as S
    from speechinterp.analysis.neurons import salient_overlap, store_redundancy
    overlap, redundancy = {}, {}
    for name, run in runs.items():
        if run.random or len(run.probes) < 2:
            continue
        overlap[name] = salient_overlap(run.probes)
        redundancy[name] = store_redundancy(S.open_store(run.store))
    return overlap, redundancy


def task_model_bias(ctx: Context, runs: Runs, corpus: Corpus) -> dict[str, dict]:
    """Per-group accuracy of each task CNN on its own task, and its change when the neurons
    salient for the protected property are masked inside the encoder (``analysis.bias``). A
    speaker-identity network has no held-out utterances we can name here (its own split is
    internal), so bias is measured on the other task networks."""
    from speechinterp import encoders, store as S
    from speechinterp.analysis.bias import masking_bias
    from speechinterp.analysis.verification import evaluation_split
    from speechinterp.probes.data import SPEAKER_TASKS
    b, out = ctx.config.bias, {}
    for name, run in runs.items():
        if (run.kind != "task_cnn" or run.random or b.protected not in run.probes
                or run.trained_for in SPEAKER_TASKS):
            continue
        st = S.open_store(run.store)
        out[name] = masking_bias(encoders.load(run.dir), st, evaluation_split(st) == "test",
                                 run.trained_for, b.protected, run.probes[b.protected]["ranking"],
                                 b.salient_fraction, corpus.root, seed=ctx.config.seed)
    return out


def with_task_models(runs: Runs) -> dict[str, EncoderRun]:
    """Each task CNN, and its random copy, with how well the CNN learned its own task
    (``analysis.task_models``)."""
    from speechinterp.analysis.task_models import task_model_accuracy
    out = dict(runs)
    for name, run in runs.items():
        if run.kind != "task_cnn" or run.random:
            continue
        rand = random_copy_of(runs, name)
        tm = task_model_accuracy(run.dir, run.trained_for, rand.dir if rand else None)
        out[name] = run.replace(task_model=tm)
        if rand:
            out[rand.name] = rand.replace(task_model=tm)
    return out


def with_findings(summary: CorpusSummary) -> CorpusSummary:
    """The summary with its findings (``analysis.findings``, over the results.json form)."""
    from speechinterp.analysis import findings
    return summary.replace(findings=tuple(findings.evaluate(summary.corpus_json())))


def corpus_summary(ctx: Context, runs: Runs, corpus: Corpus, bias: bool = True,
                   task_models: Mapping[str, dict] | None = None) -> CorpusSummary:
    """EER, overlap, redundancy, bias, the task models and the findings of one corpus's
    probes. ``task_models`` (name -> result) gives the task models measured on another corpus
    (where a task CNN's own task is not labelled); else they are measured here."""
    if task_models is None:
        runs = with_task_models(runs)
    else:
        runs = {n: r.replace(task_model=task_models.get(n)) for n, r in runs.items()}
    overlap, redundancy = overlap_and_redundancy(runs)
    summary = CorpusSummary(encoders=runs, eer=speaker_verification(ctx, runs), overlap=overlap,
                            redundancy=redundancy,
                            bias=task_model_bias(ctx, runs, corpus) if bias else {})
    return with_findings(summary)
