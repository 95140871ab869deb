"""Chaos runs: randomized crash points and Blooio faults against one local world.

``python -m tests.chaos.run --iterations N --seed S`` (see ``run.py``); the invariants it
counts are shared with ``tests/integration/test_resilience.py`` (``invariants.py``).
"""
