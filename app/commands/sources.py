"""CLI commands: sources."""

COMMANDS: list = []
