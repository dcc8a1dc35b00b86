"""What the README promises about CI and about what leaves the machine stays true to the code."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme() -> str:
    return " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())


def test_the_readme_says_ci_deletes_the_venv_when_it_does():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    if "rm -rf .venv" in ci:
        assert "it deletes `.venv` first" in _readme()


def test_the_readme_says_result_pages_are_fetched_from_their_sites():
    """The retriever downloads every page a search finds (retrieval/research.py), not only the queries."""
    readme = _readme()
    assert "Only search queries leave the machine" not in readme
    assert "the pages it finds are then fetched from their own sites" in readme
