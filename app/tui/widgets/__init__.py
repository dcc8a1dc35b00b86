"""The research screen's panes, one widget per file."""
