"""Palais: a secure message-transfer gateway for the justice sector."""

__version__ = "0.1.0"
