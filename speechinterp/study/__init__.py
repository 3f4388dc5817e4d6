"""The study as a library: typed records through named stages (docs/design.md, "The study")."""
from speechinterp.study.pipeline import run, write_outputs
from speechinterp.study.records import CorpusSummary, EncoderRun, RecordedCorpus, StudySummary

__all__ = ["run", "write_outputs", "CorpusSummary", "EncoderRun", "RecordedCorpus",
           "StudySummary"]
