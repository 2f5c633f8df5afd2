"""Test a persona before shipping it: scripted and simulated conversations, with a report.

``python -m persona_tests PERSONA.json SCENARIOS.yaml`` runs each scenario against the
persona's real pipeline (its engines, prompt, objectives, guardrails and tools), checks
the expectations and writes an HTML report (timeline and both sides' audio), a JSON
summary and JUnit XML. See :mod:`persona_tests.scenario` for the file format and the
README's "Testing a persona".
"""
