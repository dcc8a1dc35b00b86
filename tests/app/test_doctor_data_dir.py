"""A data folder that `sala-report doctor` creates first is as private as one the store creates (0700)."""

from __future__ import annotations

import os
import stat

from sala_report.app import doctor
from sala_report.app.settings import load_settings


def test_doctor_creates_the_data_folder_readable_by_this_user_only(tmp_path):
    data = tmp_path / "data"
    previous = os.umask(0o022)  # the usual umask, which would leave a plain mkdir at 0755
    try:
        found = {c.area: c for c in doctor.run_checks(load_settings(overrides={"paths.data_dir": data}))}
    finally:
        os.umask(previous)
    assert found["data dir"].status in ("ok", "warn"), found["data dir"]
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
