"""Intake: the only door into the platform and the only writer of case events."""
