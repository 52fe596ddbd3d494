"""Coded clinical notes: one shape, several sources, labels and splits."""

from fedicd.data.notes import CodedNotes, LoadSummary, unique_codes

__all__ = ["CodedNotes", "LoadSummary", "unique_codes"]
