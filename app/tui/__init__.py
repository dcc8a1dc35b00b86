"""The Textual terminal app. Only this package imports Textual; the CLI loads it lazily (launch_tui)."""
