"""The paper's setting (Chowdhury et al. 2023) on real data and checkpoints you provide.

    python -m experiments.run_study --config=experiments/configs/study_paper.py \
        --config.corpus.manifest=/data/voxceleb1/manifest.csv \
        --config.pretrained.wav2vec2_base=/ckpt/wav2vec2-base \
        --out=runs/paper

Make the manifest with the importers in ``speechinterp.corpus`` (VoxCeleb1 for gender /
speaker / nationality-as-accent, Common Voice for language / accent, ADI17 for dialect). Any
checkpoint the converter reads can be given under ``pretrained`` (the names listed there; empty
ones are skipped); ``--config.properties`` takes a tuple, ``'("gender", "speaker")'``;
the task CNN uses the paper's MGB-3 architecture.

Several devices: extraction shards each batch, and probing shards the probe axis, over all local
devices with no flag. Several hosts: start the same command on every host under JAX's
multi-controller runtime with ``--config.extract.distributed=True`` (each extraction calls
``jax.distributed.initialize()``; set JAX_COORDINATOR_ADDRESS / process ids as JAX documents).
"""
from experiments.configs import study_default


def get_config():
    c = study_default.get_config()
    c.corpus.manifest = ""          # required: path to utterances.csv of your corpus
    # name -> local checkpoint (HF directory, fairseq .pt, openai-whisper .pt, CTranslate2 dir);
    # set them with --config.pretrained.NAME=PATH, e.g. /ckpt/wav2vec2-base, /ckpt/xlsr_53_56k.pt,
    # /ckpt/hubert-base-ls960, /ckpt/wavlm-base. Entries left empty are skipped.
    c.pretrained = {"wav2vec2_base": "", "xlsr53": "", "hubert_base": "", "wavlm_base": "",
                    "whisper": ""}
    c.task_cnns = {"cnn_dialect": "accent", "cnn_speaker": "speaker"}
    c.cnn.preset = "mgb3"
    c.cnn.fc_dims = ""              # the MGB-3 architecture's own FC layers (1500, 600)
    c.cnn_by_task = {}
    c.cnn.epochs = 20
    c.cnn.crop_seconds = 3.0
    c.probe.config = "default"
    c.probe.per_neuron = True
    c.extract.parallel = 1           # large models on accelerators: one extraction at a time
    c.recorded.enabled = False       # the recorded corpus downloads ~430 MB of packages
    return c
