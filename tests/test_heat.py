"""The share of the Grad-CAM heat inside the hand mask (``evaluate/heat.py``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from boneage_core.evaluate.heat import heat_share


@pytest.mark.parametrize(
    ("inside", "outside", "expected"), [(1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.5), (3.0, 1.0, 0.75)]
)
def test_heat_share(inside, outside, expected):
    mask = np.zeros((4, 4), bool)
    mask[:2] = True  # half the film
    heat = np.where(mask, inside, outside).astype(np.float32)
    assert heat_share(heat, mask) == pytest.approx(expected)


def test_all_zero_heat_is_nan():
    assert np.isnan(heat_share(np.zeros((3, 3)), np.ones((3, 3), bool)))


def test_heat_share_cli_on_a_full_resolution_film(fullres_films, shared_data, tmp_path, monkeypatch):
    """Every member of the shipped ensemble, on a real film, with the classical mask (no SAM here)."""
    from boneage_core.cli import main
    from boneage_core.settings import get_settings

    monkeypatch.setenv("BONEAGE_SAM_CHECKPOINT", str(tmp_path / "none.pt"))
    get_settings.cache_clear()
    folder = tmp_path / "films"
    folder.mkdir()
    (folder / fullres_films[0].name).write_bytes(fullres_films[0].read_bytes())
    out = tmp_path / "heat.json"
    labels = shared_data / "rsna-fullres" / "labels.csv"
    assert main(["heat-share", "--images", str(folder), "--labels", str(labels), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    get_settings.cache_clear()
    assert result["films"] == 1 and result["per_film"][0]["segmenter"] == "classical"
    shares = result["share_inside_mask"]
    assert set(shares) == {"ensemble", *(f"member_{k}" for k in range(len(shares) - 1))}
    assert len(shares) >= 2  # the shipped model is an ensemble
    for figures in shares.values():
        assert 0.0 <= figures["mean"] <= 1.0
    assert len(result["weights_sha256"]) == 64
