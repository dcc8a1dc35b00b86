"""AgentCPM-Report's prompt contract: with `warp.prompt_dir`, the person's templates get exactly the variables
and layouts the released pipeline passes, rendered as it renders them; the built-in "agentcpm" style uses the
same layouts with our own wording; AgentCPM-Report is recognised by name.

How the expected strings were derived, from reading OpenBMB/UltraRAG `servers/prompt/src/prompt.py` (the
renderer the AgentCPM-Report pipeline uses) and `servers/custom/src/custom.py` (the evidence packing):
- each template is loaded as `jinja2.Template(file_text)` with default options and rendered with keyword
  arguments only; nothing is stripped or added, so the file's single trailing newline is dropped (Jinja's
  default) and everything else comes out as written;
- search: `user_query`, `current_outline` (the outline printed by `_print_tasknote`, or "There is no
  survey." before one exists), `current_instruction` = "You need to update " + cursor ("outline" or
  "section-1.1");
- init-plan: `user_query`, `current_information`;
- write: `user_query`, `current_survey` (`_print_tasknote_hire`: without a tokenizer the same lines as
  `_print_tasknote`), `current_instruction`, `current_information`;
- extend: `user_query`, `current_survey` (`_print_tasknote` unabbreviated);
- the outline: "# Title: [OK] " + title (the title goes through the same one-line helper as text), then per
  node "# Section-1 [title]: " + "[OK] " + text on one line, or "[PLAN] " + plan, children as
  "    ## Section-1.1 [...]" and "        ### Section-1.1.1 [...]", each line ending in "\\n";
- the passages: "bibkey:" + key + "\\n" + text, joined by a blank line.
The fixed state below has no citations and no characters our neutralisation changes, so our neutralised,
citation-free outline is byte for byte the released one."""

from __future__ import annotations

import jinja2
import pytest

from sala_report.app.errors import ConfigError
from sala_report.app.warp.citations import Entry
from sala_report.app.warp.prompts import auto_style, fit, render, system_prompt, template, user_style
from sala_report.app.warp.state import Outline

QUESTION = "How well do heat pumps work in cold climates?"

# Templates of our own that use the released variable names (each file ends in a newline, as editors save them).
TEMPLATES = {
    "surveycpm_search.jinja": "Q={{ user_query }}\n[outline]\n{{ current_outline }}[/outline]\n{{ current_instruction }}\n",
    "surveycpm_init_plan.jinja": "Q={{ user_query }}\n{% if current_information %}{{ current_information }}{% endif %}\n",
    "surveycpm_write.jinja": "Q={{ user_query }}\n{{ current_survey }}{{ current_instruction }}\n\n{{ current_information }}\n\n",
    "surveycpm_extend_plan.jinja": "  Q={{ user_query }}\n{{ current_survey }}{{ undefined_is_empty }}END\n",
}

OUTLINE_TEXT = (
    "# Title: [OK] Heat pumps in cold climates\n"
    "# Section-1 [Efficiency]: [OK] Modern units keep a COP above 2 at minus 15 degrees, field trials show.\n"
    "    ## Section-1.1 [Defrost cycles]: [PLAN] How defrosting costs energy\n"
    "        ### Section-1.1.1 [Sensors]: [PLAN] Which sensors trigger a defrost\n"
    "# Section-2 [Costs]: [PLAN] Upfront and running costs\n"
)
EVIDENCE_TEXT = (
    "bibkey:textid1\nField trials in Norway measured a seasonal COP of 2.8.\n\n"
    "bibkey:textid3\nInstallation costs fell by a fifth since 2019."
)
EXPECTED = {
    "search.jinja": f"Q={QUESTION}\n[outline]\n{OUTLINE_TEXT}[/outline]\nYou need to update section-1.1",
    "init_plan.jinja": f"Q={QUESTION}\n{EVIDENCE_TEXT}",
    "write.jinja": f"Q={QUESTION}\n{OUTLINE_TEXT}You need to update section-1.1\n\n{EVIDENCE_TEXT}\n",
    "extend_plan.jinja": f"  Q={QUESTION}\n{OUTLINE_TEXT}END",
}


def fixed_state() -> tuple[Outline, list[Entry]]:
    outline = Outline()
    outline.title = "Heat pumps in cold climates"
    efficiency = outline.new_node("Efficiency", "How efficient they stay when it is cold")
    efficiency.content = "Modern units keep a COP above 2 at minus 15 degrees,\nfield trials show."
    defrost = outline.new_node("Defrost cycles", "How defrosting costs energy")
    defrost.children = [outline.new_node("Sensors", "Which sensors trigger a defrost")]
    efficiency.children = [defrost]
    outline.sections = [efficiency, outline.new_node("Costs", "Upfront and running costs")]
    entries = [
        Entry(
            "textid1",
            "c1",
            1,
            "Trials",
            "/docs/trials.md",
            "file",
            "Field trials in Norway measured a seasonal COP of 2.8.",
        ),
        Entry("textid3", "c3", 2, "Costs", "/docs/costs.md", "file", "Installation costs fell by a fifth since 2019."),
    ]
    return outline, entries


def rendered(style: str, name: str) -> str:
    outline, entries = fixed_state()
    target = 'section-1.1 "Defrost cycles" (plan: How defrosting costs energy)'

    def build(draft: str, evidence: str, shown: list[Entry]) -> str:
        return render(
            template(name, style),
            question=QUESTION,
            draft=draft,
            evidence=evidence,
            target=target,
            title="Defrost cycles",
            plan="",
            keys=[e.key for e in shown],
            max_citations=12,
            feedback=None,
            min_sections=3,
            max_sections=12,
            max_keywords=5,
            sections=[],
            positions=["section-2"],
            forced=[],
            min_subsections=2,
            max_subsections=7,
        )

    return fit(build, outline, entries, count=len, budget=100_000, passage_chars=1200, style=style).user


@pytest.fixture
def prompt_dir(tmp_path):
    for name, text in TEMPLATES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", list(EXPECTED))
def test_user_templates_render_as_the_released_renderer_does(prompt_dir, name):
    assert rendered(user_style(str(prompt_dir)), name) == EXPECTED[name]


def test_no_system_prompt_for_agentcpm(prompt_dir):
    assert system_prompt(user_style(str(prompt_dir))) == "" and system_prompt("agentcpm") == ""
    assert system_prompt("full")


def test_our_agentcpm_templates_use_the_released_layouts():
    write = rendered("agentcpm", "write.jinja")
    assert OUTLINE_TEXT in write and EVIDENCE_TEXT in write and "You need to update section-1.1" in write
    assert "<evidence" not in write
    extend = rendered("agentcpm", "extend_plan.jinja")
    assert '"position": "section-x.y.z"' in extend and OUTLINE_TEXT in extend
    assert '"position": "section-1"' not in rendered("full", "extend_plan.jinja")


def test_a_missing_or_broken_template_is_one_clear_error(prompt_dir, tmp_path_factory):
    with pytest.raises(ConfigError, match="lacks surveycpm_search.jinja"):
        user_style(str(tmp_path_factory.mktemp("empty")))
    (prompt_dir / "surveycpm_write.jinja").write_text("{% if %}", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not render"):
        rendered(user_style(str(prompt_dir)), "write.jinja")


def test_agentcpm_report_is_recognised_by_name():
    from types import SimpleNamespace

    assert (
        auto_style(SimpleNamespace(name="openbmb/AgentCPM-Report at http://127.0.0.1:8000/v1 (vLLM 0.11.0, grammar)"))
        == "agentcpm"
    )
    assert auto_style(SimpleNamespace(name="/models/agentcpm_report-Q4_K_M.gguf")) == "agentcpm"
    assert auto_style(SimpleNamespace(name="smollm2-135m", small_model=True)) == "compact"
    assert auto_style(SimpleNamespace(name="MiniCPM-SALA")) == "full"


def test_jinja_default_drops_one_trailing_newline():
    """The fact the expected strings rest on (jinja2.Template's default keep_trailing_newline=False)."""
    assert jinja2.Template("a\n").render() == "a" and jinja2.Template("a\n\n").render() == "a\n"


def agentcpm_answer(body: dict) -> str:
    """A stand-in for AgentCPM-Report behind vLLM: reads our agentcpm prompts (bibkey blocks, released
    outline lines) and answers in the trained format, with a space after <action> and "COP < 2" in prose."""
    import json
    import re

    prompt = body["messages"][-1]["content"]
    if prompt.startswith("You are the Searcher"):
        return '<thought>find it</thought>\n<action>{"name": "search", "keywords": ["solar power"]}</action>'
    if "first outline" in prompt:
        sections = [{"title": t, "plan": f"What {t.lower()} covers"} for t in ("Solar power", "Storage", "Policy")]
        return (
            "<thought>three parts</thought>\n<action>"
            + json.dumps({"name": "init-plan", "title": "Solar today", "sections": sections})
            + "</action>"
        )
    if prompt.startswith("You are the Writer"):
        key = re.findall(r"^bibkey:(textid\d+)$", prompt, re.M)[0]
        return (
            f"<thought>cite {key}</thought>\n<action> Solar panels now reach a COP < 2 equivalent in winter "
            f"tests, and modules got much cheaper over the decade \\cite{{{key}}}.</action>"
        )
    return '<thought>deep enough</thought>\n<action>{"name": "nop"}</action>'


def test_agentcpm_report_behind_vllm_runs_in_its_own_format(corpus):
    from fake_openai import FakeOpenAI
    from warp_fakes import check_report, settings

    from sala_report.app.warp import Engine
    from sala_report.app.warp.openai_http import OpenAIGenerator

    store, retriever, ids = corpus
    with FakeOpenAI(agentcpm_answer, flavour="vllm", model="openbmb/AgentCPM-Report", context=32768) as fake:
        gen = OpenAIGenerator(fake.url, sleep=lambda s: None)
        engine = Engine.start(
            store,
            gen,
            retriever,
            settings(context_tokens=0, max_expands=1),
            "How is solar changing?",
            docs_source_ids=ids,
        )
        result = engine.run()
    assert result.status == "done", result
    assert all(m["role"] == "user" for body in fake.bodies for m in body["messages"])  # no system prompt
    writes = [b for b in fake.bodies if b["messages"][-1]["content"].startswith("You are the Writer")]
    assert writes and all("\nbibkey:textid" in b["messages"][-1]["content"] for b in writes)
    assert "# Section-1 [Solar power]: [OK] Solar panels" in writes[-1]["messages"][-1]["content"]
    markdown = check_report(store, result.session_id)
    assert "COP < 2" in markdown and "[1]" in markdown
