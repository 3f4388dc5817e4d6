"""The paper preset end to end: a tiny random Hugging Face wav2vec2 checkpoint, the tiny
built-in corpus as the manifest, and tiny task CNNs. Finding 9 (CNNs vs Transformers) must be
decided and name the wav2vec2 encoder: its architecture comes from the encoder registry.

Channel is among the properties because the tiny corpus has 7 test speakers: gender and speaker
intervals clustered by speaker are too wide to decide anything there, while every speaker has
every channel. The checkpoint has the real model's 320-sample stride, so extraction is quick."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W2V = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
           conv_dim=(8, 8, 8, 8), conv_kernel=(10, 4, 4, 4), conv_stride=(5, 4, 4, 4),
           num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)


@pytest.mark.slow
def test_paper_preset_decides_cnn_vs_transformer(tmp_path):
    transformers = pytest.importorskip("transformers")
    ckpt = tmp_path / "w2v"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**W2V)).save_pretrained(ckpt)
    corpus = tmp_path / "corpus"
    r = subprocess.run([sys.executable, "-m", "experiments.build_corpus", "--size=tiny",
                        f"--out={corpus}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "experiments.run_study",
           "--config=experiments/configs/study_paper.py", f"--out={out}",
           f"--config.corpus.manifest={corpus / 'utterances.csv'}",
           f"--config.pretrained.wav2vec2_base={ckpt}",
           "--config.properties=('gender', 'speaker', 'channel')",
           "--config.task_cnns.cnn_dialect=channel",   # easy tasks, so that the CNNs learn them
           "--config.task_cnns.cnn_speaker=gender",
           "--config.cnn.preset=tiny", "--config.cnn.epochs=10", "--config.cnn.lr=3e-3",
           "--config.cnn.batch_size=16", "--config.cnn.crop_seconds=2.0",
           "--config.random_baselines=False", "--config.extract.batch_size=8",
           "--config.probe.config=neurox", "--config.probe.seeds=1",
           "--config.probe.per_neuron=False", "--config.verification.max_trials=500"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    res = json.load(open(out / "results.json"))
    encs = res["encoders"]
    assert encs["wav2vec2_base"]["family"] == "wav2vec2"
    assert encs["wav2vec2_base"]["architecture"] == "transformer"
    assert encs["cnn_dialect"]["task_model"]["learned"], encs["cnn_dialect"]["task_model"]
    f9 = res["findings"][8]
    assert f9["finding"].startswith("CNNs are competitive with Transformers")
    assert f9["outcome"] != "undecided", f9
    assert f9["per_encoder"]["cnn_dialect/channel"]["outcome"] != "undecided", f9
    assert "wav2vec2_base" in f9["per_encoder"]["cnn_dialect/channel"]["why"]
    assert "wav2vec2_base" in f9["evidence"]
    report = open(out / "report.md").read()
    assert "`cnn_dialect/channel`" in report and "How the verdicts are reached" in report
