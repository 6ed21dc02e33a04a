"""Review: the radiologist's side. Films read into an append-only log, masks decided, ages confirmed or
corrected, and the model's agreement with the readers measured and exported.

* ``schema``, ``log``, ``queries``: the review log (SQLite or PostgreSQL; tables, writes, the "latest of
  everything" reads);
* ``target``, ``database``, ``migrate``, ``chain``, ``triggers``, ``verify``: where the log is (a path or a
  URL), opening it (Alembic migrations in ``migrations/``) and its locked write transactions, the hash
  chain keyed by the site secret with its anchor, the append-only triggers, and ``boneage log verify``;
* ``passwords``, ``accounts``: reader accounts kept in the log (scrypt hashes, roles, throttled sign-in);
* ``intake``: what the app takes in from a browser (upload limits, which manifests may be imported);
* ``commands``: the ``boneage users`` and ``boneage log`` subcommands;
* ``usable``: the films of a preprocess manifest whose mask no reader rejected (training's filter);
* ``reading``: :class:`~boneage_core.review.reading.ReadingService`, one film end to end (read, segment,
  estimate, log), what the app's Read and Masks pages call;
* ``dashboard``, ``export``: the dashboards' tables and charts and the CSV exports (no Streamlit here);
* ``visual``: mask, heatmap and prompt-point overlays for the screen (HW uint8 in, HWC RGB out);
* ``worklist``, ``form``, ``viewer``, ``sessions``: the reading workflow behind the Worklist page (the
  cases to read and the next one, the reading form's rules, the full-resolution film viewer, sign-in
  tokens that survive a reload).

May import: ``boneage_core.errors``, ``boneage_core.settings``, ``boneage_core.secret``, ``films``,
``clinical``, ``segment``, ``model``, ``evaluate``. Only ``app/`` and ``pages/`` (UI), ``training`` and ``cli`` sit above it.
"""
