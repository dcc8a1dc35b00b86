"""`sala-report run / resume / sessions`, headless, against a real OpenAI-compatible server on loopback
that answers with the scripted policy: report files, the --json summary, and every exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_openai import FakeOpenAI, free_port, point_app_at, write_docs
from warp_fakes import Policy, kind_of

from sala_report.app.cli import main

DOCS = {
    "solar.md": "# Solar power\n\nSolar module prices fell by about ninety percent over a decade.\n\n"
    "Rooftop solar panels let households sell surplus electricity back to the grid.\n",
    "storage.md": "# Battery storage\n\nLithium-ion batteries store surplus solar electricity for the evening peak.\n",
    "policy.md": "# Energy policy\n\nFeed-in tariffs and auctions gave renewable energy projects long-term revenue.\n",
}


def answer(body: dict) -> str:
    request = SimpleNamespace(prompt=body["messages"][1]["content"])
    return Policy(expands=0)(kind_of(request), request)


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAI(answer) as fake:
        point_app_at(monkeypatch, fake, expands=1)
        yield fake


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path, DOCS)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_headless_json_writes_the_report_and_a_summary(server, docs, capsys):
    code, out, err = cli(
        capsys,
        "run",
        "How is renewable energy changing electricity?",
        "--headless",
        "--docs",
        str(docs),
        "--no-web",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) >= {"session_id", "status", "report_paths", "sources", "citations", "steps", "tokens", "time"}
    assert summary["status"] == "done" and summary["steps"] == 9
    assert summary["citations"]["verified"] == summary["citations"]["total"] > 0
    assert summary["tokens"]["total"] == summary["tokens"]["prompt"] + summary["tokens"]["completion"] > 0
    assert all(s["location"].startswith(str(docs.resolve())) for s in summary["sources"]) and summary["sources"]
    report = Path(summary["report_paths"][0])
    assert report.parent == Path(os.environ["SALA_REPORT_HOME"]) / "reports"
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Renewable energy today\n") and "\n## References\n" in text
    assert "[step 1/140" in err and "report:" in err  # progress on stderr, nothing else on stdout
    assert out.count("\n") == 1


def test_run_without_headless_off_a_terminal_runs_headless(server, docs, capsys, tmp_path):
    out_file = tmp_path / "r.md"
    code, out, err = cli(capsys, "run", "Solar?", "--docs", str(docs), "--no-web", "--out", str(out_file))
    assert code == 0 and out_file.read_text().startswith("# ") and out == ""


def test_partial_run_exits_3_and_resume_finishes_it(server, docs, capsys, tmp_path):
    out_file = tmp_path / "report.md"
    code, out, _ = cli(
        capsys,
        "run",
        "Solar?",
        "--headless",
        "--docs",
        str(docs),
        "--no-web",
        "--max-steps",
        "4",
        "--out",
        str(out_file),
        "--json",
    )
    first = json.loads(out)
    assert code == 3 and first["status"] == "partial" and first["steps"] == 4
    assert "*How batteries balance supply*" in out_file.read_text()  # unwritten sections keep their plan
    code, out, _ = cli(capsys, "sessions", "--json")
    assert [(s["session_id"], s["status"]) for s in json.loads(out)] == [(first["session_id"], "partial")]
    code, out, err = cli(capsys, "resume", first["session_id"][:6], "--headless", "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["status"] == "done" and done["steps"] == 9 and done["session_id"] == first["session_id"]
    code, out, err = cli(capsys, "sessions")
    assert first["session_id"] in out and "done" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "   ", "--headless", "--no-web"], "question is empty"),
        (["run", "Solar?", "--headless", "--no-web"], "nothing to read"),
        (["resume", "nosuch"], "no sessions yet"),
        (["run", "Solar?", "--docs", "/no/such/folder"], "does not exist"),
    ],
)
def test_usage_errors_exit_2(server, capsys, args, message):
    code, out, err = cli(capsys, *args)
    assert code == 2 and message in err


def test_a_model_server_that_is_down_exits_4(docs, capsys, monkeypatch):
    monkeypatch.setenv("SALA_REPORT_MODEL__BACKEND", "openai")
    monkeypatch.setenv("SALA_REPORT_MODEL__BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("SALA_REPORT_MODEL__MAX_RETRIES", "0")
    code, out, err = cli(capsys, "run", "Solar?", "--headless", "--docs", str(docs), "--no-web", "--json")
    assert code == 4 and "Model backend unavailable" in err and "cannot reach the model server" in err
    assert json.loads(out)["status"] == "failed"  # the session is kept, to resume once the server is back


def test_ctrl_c_saves_the_checkpoint_and_exits_130(server, docs, capsys, tmp_path):
    server.faults = ["ok", ("slow", 1.5)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sala_report.app.cli",
            "run",
            "Solar?",
            "--headless",
            "--docs",
            str(docs),
            "--no-web",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("[step 2/"):
            time.sleep(0.3)  # the server is holding the answer to step 2
            proc.send_signal(signal.SIGINT)
            break
    out, rest = proc.communicate(timeout=30)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["status"] == "cancelled" and summary["steps"] == 1
    assert f"sala-report resume {summary['session_id']}" in err
    code, out, _ = cli(capsys, "resume", summary["session_id"], "--json")
    assert code == 0 and json.loads(out)["status"] == "done"
