"""Split the 1,000 validation films once into a *tune* half and a *report* half (500 each).

tune: every choice (best epoch, TTA, ensemble weights, calibration of the intervals).
report: touched only for the final figures of the README and the model card.

The halves are matched on sex and bone age: the films are sorted by (sex, bone age, id), taken in
consecutive pairs, and a coin (random.Random(2026)) sends one of each pair to each half.
Rebuild: python configs/splits/make_tune_report.py   (the output is committed; it must not change)
"""

import csv
import random
from pathlib import Path

here = Path(__file__).parent
with open(here / "rsna-val.csv", newline="") as f:
    rows = list(csv.DictReader(f))
rows.sort(key=lambda r: (r["male"], float(r["boneage"]), int(r["id"])))
rng = random.Random(2026)
tune, report = [], []
for i in range(0, len(rows), 2):
    pair = rows[i : i + 2]
    rng.shuffle(pair)
    tune.append(pair[0])
    if len(pair) > 1:
        report.append(pair[1])
for name, part in (("rsna-val-tune.csv", tune), ("rsna-val-report.csv", report)):
    part.sort(key=lambda r: int(r["id"]))
    with open(here / name, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "boneage", "male"], lineterminator="\n")
        w.writeheader()
        w.writerows(part)
    print(name, len(part))
