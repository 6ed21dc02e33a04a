"""Training: the bone-age regressor learnt from labelled films (``boneage train --config ...``).

* ``config``: the YAML config (``data``, ``preprocess``, ``augment``, ``optim``) as dataclasses;
* ``data``: the fixed split by id, the films kept (a manifest's usable masks, minus those a reader
  rejected in the review log), decoded once into a ``uint8`` tensor of canonical films;
* ``loop``: the training loop (EMA, warm-up then cosine, validation each epoch, ``best.pt``);
* ``distributed``: one process or several through ``torchrun``; ``state``: ``last.pt`` for ``--resume``
  and the metadata of ``best.pt``; ``progress``: the progress bar and ``log.csv`` / TensorBoard.

It learns from the reviewed data, so it sits above ``review`` (for
:func:`boneage_core.review.usable.usable_ids`). May import every stage but ``cli``; nothing imports it
but ``cli``. What it writes, a checkpoint, is read by :mod:`boneage_core.model.checkpoint`.
"""
