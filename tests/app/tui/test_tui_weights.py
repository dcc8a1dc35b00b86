"""The start screen says which weight format the model will load in (told from the settings and the path, at
first paint), follows the model field, and refuses model.quantize = "gguf" for a checkpoint folder at once."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static
from tui_helpers import make_services

from sala_report.app.tui.app import SalaApp
from sala_report.app.tui.screens.start import StartScreen

pytestmark = pytest.mark.anyio


def _weights(form: StartScreen) -> str:
    return str(form.query_one("#weights", Static).render())


async def test_the_weights_line_follows_the_settings_and_the_model_field(tmp_path):
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")  # the line is told from the path; nothing loads it
    services = make_services(tmp_path)
    form = StartScreen(question="q", model=str(gguf))
    async with SalaApp(services, start_form=form).run_test(size=(120, 50)) as pilot:
        # make_services runs on the CPU: "auto" keeps the weights unquantized in float32 there (model/load.py)
        assert _weights(form) == "Weights: unquantized, in float32 (the GGUF dequantised)"
        services.settings.model.quantize = "gguf"
        form.query_one("#model", Input).value = ""  # the settings' own source, the embedded default
        await pilot.pause()
        assert _weights(form) == (
            "Weights: the GGUF file's own Q4_0 / Q4_1 / Q8_0 / Q4_K blocks (other types dequantised)"
        )
        services.settings.model.quantize = "int4"
        form.query_one("#model", Input).value = str(gguf)
        await pilot.pause()
        assert _weights(form) == "Weights: int4 weights (groups of 128, int8 head), quantized as the model loads"


async def test_gguf_for_a_checkpoint_folder_is_one_notification_and_nothing_starts(tmp_path):
    folder = tmp_path / "MiniCPM-SALA"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    services = make_services(tmp_path)
    services.settings.model.quantize = "gguf"
    form = StartScreen(question="How did renewable energy grow?", model=str(folder))
    app = SalaApp(services, start_form=form)
    async with app.run_test(size=(120, 50)) as pilot:
        expected = f"model.quantize = 'gguf' keeps a GGUF file's own quantized blocks, but the model '{folder}' is"
        assert _weights(form) == f"Weights: {expected} a checkpoint folder or Hugging Face id, not a .gguf file"
        form.query_one("#start-run").press()
        await pilot.pause()
        notes = [n.message for n in app._notifications]
        assert len(notes) == 1 and notes[0].startswith(expected) and "Set model.quantize to 'auto'" in notes[0]
        assert app.screen is form and services.seen == []
