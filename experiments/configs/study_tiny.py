"""A tiny study for CI: the whole pipeline in a few minutes on the tiny built-in corpus.

    python -m experiments.run_study --config=experiments/configs/study_tiny.py --out=runs/tiny
"""
from experiments.configs import study_default


def get_config():
    c = study_default.get_config()
    c.corpus.builtin_size = "tiny"
    c.pretrained = {"ge2e": "wheel:resemblyzer==0.1.4:resemblyzer/pretrained.pt"}
    c.task_cnns = {"cnn_accent": "accent"}
    c.cnn.preset = "tiny"
    c.cnn.epochs = 3
    c.cnn.batch_size = 16
    c.cnn_by_task = {}
    c.extract.batch_size = 8
    c.probe.config = "neurox"
    c.probe.seeds = 2
    c.verification.max_trials = 2000
    c.recorded.enabled = False       # the recorded corpus downloads ~430 MB of packages
    return c
