"""Triage after the fact: the incident timeline, spike detection, config drift."""
