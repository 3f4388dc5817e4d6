"""Benchmarks of the library against its reference tools: dev tools, run from the repository
root (``python -m experiments.benchmarks.bench_probes``), not shipped in the wheel.

They build their PyTorch peers with the equivalence tests' own references
(``tests/references.py``), so that a benchmark times the very model a test checks. ``tests/``
is put on ``sys.path`` here, as each test file puts it there; the benchmarks then import
``references`` (and ``measure``) by name.
"""
import os
import sys

TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
