"""The study's typed records: one encoder's run, one corpus's summary, the whole study.

Stages return new records (``dataclasses.replace``), never mutate a shared dict. ``to_json``
gives the ``results.json`` form (docs/formats.md) and ``from_json`` reads it back, so a report or
a test is built from the same records the pipeline produces. Probe results, EERs, overlaps and
findings stay the JSON dicts that their producers (``probes.protocol``, ``analysis.*``) return.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

RANDOM_SUFFIX = "_random"


@dataclass(frozen=True)
class EncoderRun:
    """One encoder of the study, from its folder to its probes.

    ``kind`` is ``pretrained`` or ``task_cnn``; a random-weights copy has ``random`` set and
    ``base`` naming the encoder it copies; a task CNN has ``trained_for`` (its property).
    ``store`` / ``probes`` are filled by the extraction and probing stages, ``task_model`` by
    the task-model analysis (a task CNN and its random copy)."""
    name: str
    dir: str
    key: str
    kind: str
    random: bool = False
    base: str | None = None
    trained_for: str | None = None
    family: str | None = None
    architecture: str | None = None
    store: str | None = None
    store_key: str | None = None
    probes: Mapping[str, dict] = field(default_factory=dict)
    task_model: dict | None = None

    def replace(self, **changes) -> "EncoderRun":
        return dataclasses.replace(self, **changes)

    def unprobed(self) -> "EncoderRun":
        """The same encoder before extraction (for another corpus)."""
        return self.replace(store=None, store_key=None, probes={}, task_model=None)

    def to_json(self) -> dict:
        d = {"dir": self.dir, "key": self.key, "kind": self.kind, "random": self.random}
        if self.trained_for is not None and not self.random:
            d["trained_for"] = self.trained_for
        if self.base is not None:
            d["base"] = self.base
        for k in ("family", "architecture", "store", "store_key"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.store is not None or self.probes:
            d["probes"] = dict(self.probes)
        if self.task_model is not None:
            d["task_model"] = self.task_model
        return d

    @classmethod
    def from_json(cls, name: str, d: Mapping) -> "EncoderRun":
        random = bool(d.get("random"))
        base = d.get("base") or (name[:-len(RANDOM_SUFFIX)]
                                 if random and name.endswith(RANDOM_SUFFIX) else None)
        return cls(name=name, dir=d.get("dir", ""), key=d.get("key", ""),
                   kind=d.get("kind", "pretrained"), random=random, base=base,
                   trained_for=d.get("trained_for"), family=d.get("family"),
                   architecture=d.get("architecture"), store=d.get("store"),
                   store_key=d.get("store_key"), probes=dict(d.get("probes") or {}),
                   task_model=d.get("task_model"))


def random_copy_name(name: str) -> str:
    return name + RANDOM_SUFFIX


def random_copy_of(runs: Mapping[str, EncoderRun], name: str) -> EncoderRun | None:
    """The random-weights copy of encoder ``name`` among ``runs``, if there is one."""
    return next((e for e in runs.values() if e.random and e.base == name), None)


@dataclass(frozen=True)
class CorpusSummary:
    """Everything the study measured on one corpus: its encoders and the analyses of their
    stores (``eer``, ``overlap``, ``redundancy``, ``bias``: name -> result) and the findings."""
    encoders: Mapping[str, EncoderRun]
    eer: Mapping[str, dict] = field(default_factory=dict)
    overlap: Mapping[str, dict] = field(default_factory=dict)
    redundancy: Mapping[str, dict] = field(default_factory=dict)
    bias: Mapping[str, dict] = field(default_factory=dict)
    findings: tuple = ()

    def real(self) -> dict[str, EncoderRun]:
        """The trained / pretrained encoders (not the random-weights copies)."""
        return {n: e for n, e in self.encoders.items() if not e.random}

    def random_copy(self, name: str) -> EncoderRun | None:
        """The random-weights copy of encoder ``name``, if the study made one."""
        return random_copy_of(self.encoders, name)

    def task_cnns(self) -> dict[str, EncoderRun]:
        """The trained task CNNs (not their random copies)."""
        return {n: e for n, e in self.real().items() if e.kind == "task_cnn"}

    def properties(self) -> list[str]:
        """Every property probed in some encoder, sorted."""
        return sorted({p for e in self.encoders.values() for p in e.probes})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def corpus_json(self) -> dict:
        return {"encoders": {n: e.to_json() for n, e in self.encoders.items()},
                "eer": dict(self.eer), "overlap": dict(self.overlap),
                "redundancy": dict(self.redundancy), "bias": dict(self.bias),
                "findings": list(self.findings)}

    def to_json(self) -> dict:
        return self.corpus_json()

    @staticmethod
    def corpus_fields(d: Mapping) -> dict:
        return {"encoders": {n: EncoderRun.from_json(n, e)
                             for n, e in (d.get("encoders") or {}).items()},
                "eer": dict(d.get("eer") or {}), "overlap": dict(d.get("overlap") or {}),
                "redundancy": dict(d.get("redundancy") or {}), "bias": dict(d.get("bias") or {}),
                "findings": tuple(d.get("findings") or ())}

    @classmethod
    def from_json(cls, d: Mapping) -> "CorpusSummary":
        return cls(**cls.corpus_fields(d))


@dataclass(frozen=True)
class RecordedCorpus:
    """The recorded-speech corpus: its build status and sources, which properties it can test
    (``testable``: property -> [testable, counts]), and its summary when it was studied."""
    status: str
    sources: tuple = ()
    corpus_manifest: str | None = None
    testable: Mapping[str, list] = field(default_factory=dict)
    summary: CorpusSummary | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def studied(self) -> CorpusSummary | None:
        """Its summary when it was built and some encoder was studied on it."""
        return self.summary if self.ok and self.summary and self.summary.encoders else None

    def to_json(self) -> dict:
        if not self.ok:
            return {"status": self.status, "sources": list(self.sources)}
        return {"status": self.status, "corpus_manifest": self.corpus_manifest,
                "sources": list(self.sources), "testable": dict(self.testable),
                **(self.summary.corpus_json() if self.summary else {})}

    @classmethod
    def from_json(cls, d: Mapping) -> "RecordedCorpus":
        summary = CorpusSummary.from_json(d) if d.get("encoders") is not None else None
        return cls(status=str(d.get("status") or "not recorded"),
                   sources=tuple(d.get("sources") or ()),
                   corpus_manifest=d.get("corpus_manifest"),
                   testable=dict(d.get("testable") or {}), summary=summary)


@dataclass(frozen=True)
class StudySummary(CorpusSummary):
    """The whole study: the main corpus's summary (this record's own fields), amnesic probing,
    the recorded corpus (or None when it was not enabled), times, and the config."""
    amnesic: Mapping[str, dict] = field(default_factory=dict)
    recorded: RecordedCorpus | None = None
    corpus_manifest: str | None = None
    stage_times_s: Mapping[str, float] = field(default_factory=dict)
    total_time_s: float = 0.0
    config: Mapping = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"config": dict(self.config), **self.corpus_json(), "amnesic": dict(self.amnesic)}
        if self.recorded is not None:
            d["recorded"] = self.recorded.to_json()
        return {**d, "stage_times_s": dict(self.stage_times_s),
                "total_time_s": self.total_time_s, "corpus_manifest": self.corpus_manifest}

    @classmethod
    def from_json(cls, d: Mapping) -> "StudySummary":
        rec = d.get("recorded")
        return cls(**cls.corpus_fields(d), amnesic=dict(d.get("amnesic") or {}),
                   recorded=RecordedCorpus.from_json(rec) if rec else None,
                   corpus_manifest=d.get("corpus_manifest"),
                   stage_times_s=dict(d.get("stage_times_s") or {}),
                   total_time_s=float(d.get("total_time_s") or 0.0),
                   config=dict(d.get("config") or {}))
