"""The paper's setting (Chowdhury et al. 2023) on real data and checkpoints you provide.

    python -m experiments.run_study --config=experiments/configs/study_paper.py \
        --config.corpus.manifest=/data/voxceleb1/manifest.csv \
        --config.pretrained.wav2vec2_base=/ckpt/wav2vec2-base \
        --out=runs/paper

Make the manifest with the importers in ``speechinterp.corpus`` (VoxCeleb1 for gender /
speaker / nationality-as-accent, Common Voice for language / accent, ADI17 for dialect). Any
Hugging Face directory or fairseq ``.pt`` the converter reads can be listed under ``pretrained``;
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
    c.pretrained = {
        # name -> local checkpoint (HF directory or fairseq .pt), e.g.
        # "wav2vec2_base": "/ckpt/wav2vec2-base", "xlsr53": "/ckpt/xlsr_53_56k.pt",
        # "hubert_base": "/ckpt/hubert-base-ls960", "wavlm_base": "/ckpt/wavlm-base",
    }
    c.task_cnns = {"cnn_dialect": "accent", "cnn_speaker": "speaker"}
    c.cnn.preset = "mgb3"
    c.cnn.epochs = 20
    c.cnn.crop_seconds = 3.0
    c.probe.config = "default"
    c.probe.per_neuron = True
    return c
