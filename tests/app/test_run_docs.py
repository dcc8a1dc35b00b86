"""`run --docs` reads the folder with the [documents] settings and says which files it skipped and why,
as `sources add` does (it used the defaults and said nothing of skipped files)."""

from __future__ import annotations

import pytest

from sala_report.app.errors import UsageError
from sala_report.app.runs import LocalServices
from sala_report.app.settings import load_settings


def services_for(tmp_path, **overrides):
    settings = load_settings(
        tmp_path / "none.toml", env={}, overrides={"paths.data_dir": tmp_path / "data", **overrides}
    )
    lines: list[str] = []
    return LocalServices(settings, generator=object(), progress=lines.append), lines


def test_the_size_cap_from_the_settings_applies_and_skipped_files_are_named(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "short.md").write_text("# Frost\n\nHeat pumps defrost their coils every hour in wet cold.\n")
    (folder / "long.md").write_text("# Long\n\n" + "Defrost cycles cost energy. " * 100)
    (folder / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    services, lines = services_for(tmp_path, **{"documents.max_text_bytes": 1000})
    try:
        ids = services.ingest(folder)
        assert len(ids) == 1
        assert [s.location for s in services.store.sources(with_text=False)] == [str(folder / "short.md")]
    finally:
        services.close()
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert len(skipped) == 2, lines
    assert any("long.md" in line for line in skipped) and any("figure.png" in line for line in skipped)
    assert "2 skipped" in next(line for line in lines if "documents ready" in line)


def test_a_folder_with_nothing_readable_names_the_types_that_are(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    services, _ = services_for(tmp_path)
    try:
        with pytest.raises(UsageError) as caught:
            services.ingest(folder)
    finally:
        services.close()
    assert ".docx" in caught.value.hint and ".epub" in caught.value.hint and ".md" in caught.value.hint
