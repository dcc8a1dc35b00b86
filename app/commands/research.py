"""CLI commands: research."""

COMMANDS: list = []
