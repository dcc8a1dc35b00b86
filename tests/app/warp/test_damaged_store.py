"""Every command facing a damaged store (random bytes, a truncated file) or a read-only one (folder or file)
gives one error line with a hint, never a traceback, and changes nothing; a read-only store still lists its
sessions and exports them. The read-only cases run the real CLI in a child that cannot override file modes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from read_only import read_only, run_without_write_access  # noqa: F401 (a fixture)
from warp_fakes import ScriptedGenerator, make_store, settings

from sala_report.app.cli import main
from sala_report.app.warp import Engine


@pytest.fixture
def stored(tmp_path) -> tuple[Path, str]:
    """A data folder holding one finished session (the store closed, so its WAL is folded in)."""
    data = tmp_path / "data"
    store, retriever, ids = make_store(data / "sala.db")
    engine = Engine.start(
        store, ScriptedGenerator(), retriever, settings(), "How is renewable energy changing?", docs_source_ids=ids
    )
    engine.run()
    store.close()
    assert sorted(p.name for p in data.iterdir()) == ["sala.db"]
    return data, engine.session_id


def _commands(session_id: str, tmp_path: Path) -> list[list[str]]:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "note.md").write_text("# Note\n\nHeat pumps move heat instead of making it.\n", encoding="utf-8")
    return [
        ["sessions"],
        ["sessions", "--json"],
        ["export", session_id],
        ["export", session_id, "--format", "json"],
        ["resume", session_id, "--headless"],
        ["run", "Solar?", "--headless", "--no-web"],
        ["run", "Solar?", "--headless", "--no-web", "--docs", str(docs)],
        ["sources", "list"],
        ["sources", "search", "solar"],
        ["sources", "show", "1"],
        ["sources", "add", str(docs)],
    ]


def _damage(path: Path, how: str) -> None:
    if how == "random bytes":
        path.write_bytes(os.urandom(16384))
    else:  # the first third: the header and schema survive, the tables' pages do not
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.parametrize("how", ["random bytes", "truncated"])
def test_every_command_on_a_damaged_store_gives_one_error_and_changes_nothing(stored, tmp_path, capsys, how):
    data, session_id = stored
    store = data / "sala.db"
    _damage(store, how)
    damaged = store.read_bytes()
    for args in _commands(session_id, tmp_path):
        code = main(["--data-dir", str(data), *args])
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 1 and "Traceback" not in err, (args, err)
        assert lines[-2].startswith(f"Error: Damaged data file: {store} is damaged"), (args, err)
        assert lines[-1].strip().startswith(f"Move it aside with its -wal and -shm files (mv {store}*"), (args, err)
        assert store.read_bytes() == damaged, args
    assert not (data / "reports").exists()


# Runs each command line through the CLI's entry point in one child (a child each costs seconds on a busy
# machine); prints [{"code", "out", "err"}] as JSON. A traceback would end the child and fail the test.
RUN_ALL = """
import contextlib, io, json, sys
from sala_report.app.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


def _cli(data: Path, *commands: list[str]) -> list[dict]:
    argv = [["--data-dir", str(data), *args] for args in commands]
    child = run_without_write_access([sys.executable, "-c", RUN_ALL, json.dumps(argv)])
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr
    return json.loads(child.stdout)


def _refused(result: dict, store: Path, where: str) -> None:
    assert result["code"] == 1 and "Traceback" not in result["err"], result
    lines = result["err"].strip().splitlines()
    assert lines[-2].startswith(f"Error: Read-only data folder: {where}"), result
    assert "`sala-report sessions` and `sala-report export ID --out FILE` still work" in lines[-1]
    assert f"make {store.parent} writable" in lines[-1]


def test_a_read_only_data_folder_lists_and_exports_and_refuses_the_rest(stored, tmp_path, read_only):
    data, session_id = stored
    store = data / "sala.db"
    before = store.read_bytes()
    read_only(data)
    out = tmp_path / "report.md"
    listed, table, exported, default, resumed, sources = _cli(
        data,
        ["sessions", "--json"],
        ["sessions"],
        ["export", session_id[:4], "--out", str(out)],
        ["export", session_id],
        ["resume", session_id, "--headless"],
        ["sources", "list"],
    )
    assert listed["code"] == 0 and [s["session_id"] for s in json.loads(listed["out"])] == [session_id], listed
    assert table["code"] == 0 and session_id in table["out"].splitlines()[1], table
    assert exported["code"] == 0 and out.read_text(encoding="utf-8").startswith("# "), exported
    _refused(default, store, f"{data / 'reports'}: Permission denied")
    _refused(resumed, store, f"{store} cannot be written")
    assert sources["code"] == 0 and "Solar power" in sources["out"], sources  # read-only commands still read
    assert store.read_bytes() == before and sorted(p.name for p in data.iterdir()) == ["sala.db"]


def test_a_read_only_store_file_lists_and_exports_and_refuses_the_rest(stored, read_only):
    data, session_id = stored
    store = data / "sala.db"
    before = store.read_bytes()
    read_only(store)
    listed, exported, resumed = _cli(
        data, ["sessions", "--json"], ["export", session_id], ["resume", session_id, "--headless"]
    )
    assert listed["code"] == 0 and json.loads(listed["out"])[0]["session_id"] == session_id, listed
    assert exported["code"] == 0, exported
    assert Path(exported["out"].strip()).read_text(encoding="utf-8").startswith("# ")
    _refused(resumed, store, f"{store}: Permission denied")
    assert store.read_bytes() == before
