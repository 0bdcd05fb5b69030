"""Benchmark harness: Palais side by side with Postfix + Dovecot.

Run ``python -m bench --help`` (or ``make bench`` / ``make bench-quick``).
"""
