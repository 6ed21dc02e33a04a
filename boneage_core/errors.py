"""Exceptions raised by boneage_core.

Messages are written for the person who uploaded the film (often a radiologist): they say what is wrong
with the input and, where possible, what to do instead. They never contain patient identifiers.
:class:`CheckpointError` (a bone-age model file that cannot be used) is for whoever installs the tool.
Other stage-specific errors live beside their code (``AgeFormatError``, ``LabelFormatError``,
``SamWeightsError``, ``ReviewLogError``, ``DashboardDataError``).
"""

from __future__ import annotations


class BoneAgeError(Exception):
    """Base class of every error raised on purpose by boneage_core."""


class UnreadableFilmError(BoneAgeError, ValueError):
    """The input cannot be decoded as a hand film (not an image, damaged, unsupported DICOM object...)."""


class ImageSizeError(UnreadableFilmError):
    """The film (or the upload) is smaller or larger than the configured limits."""


class MissingSexError(BoneAgeError, ValueError):
    """Patient sex is required (bone-age standards are sex-specific) but was not given nor found."""


class NotARadiographError(UnreadableFilmError):
    """A readable image that is plainly not a radiograph (e.g. a colour photograph)."""


class CheckpointError(RuntimeError):
    """A bone-age checkpoint is missing, corrupt, or does not match this code."""
