"""Review: the radiologist's side. Films read into an append-only log, masks decided, ages confirmed or
corrected, and the model's agreement with the readers measured and exported.

* ``schema``, ``log``, ``queries``: the review log (SQLite; tables, writes, the "latest of everything" reads);
* ``usable``: the films of a preprocess manifest whose mask no reader rejected (training's filter);
* ``reading``: :class:`~boneage_core.review.reading.ReadingService`, one film end to end (read, segment,
  estimate, log), what the app's Read and Masks pages call;
* ``dashboard``, ``export``: the dashboards' tables and charts and the CSV exports (no Streamlit here);
* ``visual``: mask, heatmap and prompt-point overlays for the screen (HW uint8 in, HWC RGB out).

May import: ``boneage_core.errors``, ``boneage_core.settings``, ``films``, ``clinical``, ``segment``,
``model``, ``evaluate``. Only ``app/`` and ``pages/`` (UI), ``training`` and ``cli`` sit above it.
"""
