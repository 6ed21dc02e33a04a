"""Clinical conventions shared by every stage: ages as readers type and read them, and the age bands.

* ``ages``: :func:`~boneage_core.clinical.ages.parse_age` (months, or years and months, checked to lie in
  0-240 months) and :func:`~boneage_core.clinical.ages.format_years_months` (``125.6`` -> ``"10 y 6 m"``);
* ``bands``: the age bands, in years, of every by-band figure (metrics, uncertainty, dashboards, exports).

May import: ``boneage_core.errors`` only. Pure Python: no numpy, no torch, so the app pages may use it.
"""
