"""edgemon.paths: the checkout's folders from a checkout, an editable install or a wheel run in the checkout."""
from __future__ import annotations

import pytest

from edgemon import paths


def test_checkout_path_prefers_the_working_folder_then_beside_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    # not in the working folder: the checkout beside the package (a source checkout or editable install)
    assert paths.checkout_path("models/beat_aami.card.json") == paths.PACKAGE_PARENT / "models/beat_aami.card.json"
    # in the working folder (a wheel install run from the checkout, or a config's own models_dir)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/beat_aami.card.json").write_text("{}")
    assert paths.checkout_path("models/beat_aami.card.json") == tmp_path / "models/beat_aami.card.json"
    # nowhere: under the working folder, so that the error names a place the user knows
    assert paths.checkout_path("no/such/file") == tmp_path / "no/such/file"
    assert paths.checkout_path(tmp_path / "x") == tmp_path / "x"


def test_a_missing_split_file_is_a_clear_error(monkeypatch, tmp_path):
    from edgemon.cli import UserError
    from edgemon.evaluate import beats

    assert "101" in beats.split_records("DS1")
    monkeypatch.setattr(beats, "SPLIT_FILE", tmp_path / "tools/splits/mitdb_ds.json")
    with pytest.raises(UserError, match="split file was not found.*source checkout"):
        beats.split_records("DS1")
