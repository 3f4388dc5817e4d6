"""The study's stage cache: a stage's folder is reused when it finished with the same inputs.

``WORKDIR/stages/NAME/`` holds one stage's outputs. ``.started`` holds the key of the inputs it
was started with and ``.done`` is written last with the same key: a folder without ``.done``
(an interrupted stage) is redone from scratch, except an extraction started with these same
inputs, which resumes in place (the store's own chunks make that safe). The key is a hash of
the stage's name and its inputs (JSON, keys sorted), so changing any input reruns the stage.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

RESUMABLE_PREFIXES = ("extract_",)


def stage_key(name: str, inputs) -> str:
    """The cache key of a stage: 16 hex digits of the SHA-256 of ``[name, inputs]``."""
    blob = json.dumps([name, inputs], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """A finished stage: its folder and the key of its inputs."""
    dir: str
    key: str

    def path(self, *names: str) -> str:
        return os.path.join(self.dir, *names)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


@dataclass
class StageCache:
    """Runs stages under ``root/stages``; ``times`` records each stage's seconds (0 if cached)
    and ``report(name, status, seconds)`` is told when one is cached, running or done."""
    root: str
    report: Callable[[str, str, float | None], None] = lambda name, status, seconds: None
    times: dict = field(default_factory=dict)

    def run(self, name: str, inputs, fn: Callable[[str], None]) -> Stage:
        """Run ``fn(stage_dir)`` unless a finished stage with the same inputs is there."""
        d = os.path.join(self.root, "stages", name)
        key = stage_key(name, inputs)
        done, started = os.path.join(d, ".done"), os.path.join(d, ".started")
        if _read(done) == key:
            self.times[name] = 0.0
            self.report(name, "cached", None)
            return Stage(d, key)
        resumable = name.startswith(RESUMABLE_PREFIXES) and _read(started) == key
        if os.path.isdir(d) and not resumable:
            shutil.rmtree(d)
        os.makedirs(d, exist_ok=True)
        with open(started, "w") as f:
            f.write(key)
        self.report(name, "running", None)
        t = time.perf_counter()
        fn(d)
        self.times[name] = time.perf_counter() - t
        with open(done, "w") as f:
            f.write(key)
        self.report(name, "done", self.times[name])
        return Stage(d, key)

    def timed(self, name: str, fn: Callable[[], object]):
        """Run ``fn()`` uncached (an analysis), recording its time under ``name``."""
        t = time.perf_counter()
        out = fn()
        self.times[name] = time.perf_counter() - t
        return out
