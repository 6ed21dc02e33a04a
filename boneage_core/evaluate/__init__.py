"""Evaluate: bone-age estimates measured against reference ages, the same figures everywhere.

* ``metrics``: :func:`~boneage_core.evaluate.metrics.agreement_metrics` (MAE, RMSE, bias, Bland-Altman
  limits, within 6/12 months; overall, by sex, by age band) and ICC(A,1), pure numpy (pingouin for ICC);
* ``folder``: ``boneage evaluate``, a folder of labelled films -> ``metrics.json``, ``predictions.csv``;
* ``compare``: ``boneage compare``, two ``predictions.csv`` with a paired bootstrap interval.

Conventions: ``error = predicted - reference`` in months; limits of agreement ``bias +/- 1.96 * SD``.
May import: ``boneage_core.errors``, ``boneage_core.settings``, ``films``, ``clinical``, ``segment``,
``model``.
"""
