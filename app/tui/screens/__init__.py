"""Screens: start a run, follow and steer it, reopen past sessions, help, and small dialogs."""
