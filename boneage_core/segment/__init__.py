"""Segment: the hand found on the film, its mask cleaned and checked, and whole folders preprocessed.

Conventions (as in segment-anything's ``predictor.py``): images are HW ``uint8`` grayscale numpy arrays,
masks HW ``bool`` of the same size, points ``(x, y)`` pixel coordinates, boxes XYXY with exclusive
right/bottom edges.

* ``segmenter``: :class:`~boneage_core.segment.segmenter.HandSegmenter`, the stateful SAM segmenter;
  ``classical``: the fallback without SAM; ``result``: the ``Segmentation`` and ``MaskQuality`` they return;
* ``image``, ``prompts``, ``scoring``, ``postprocess``: the working copy, the automatic prompt points, the
  hand-likeness score and flags, and the mask clean-up, edge snapping, crop box and crop;
* ``sam_model``, ``weights``: loading SAM (MobileSAM by default), and fetching its checked checkpoint;
* ``manifest``, ``batch``, ``contact_sheet``: ``boneage preprocess`` (a folder -> masks, crops and a
  resumable manifest.csv) and the overlay sheet of a manifest.

May import: ``boneage_core.errors``, ``boneage_core.settings``, ``boneage_core.films``.
"""
