"""Systems under test: Palais and the Postfix + Dovecot peer."""

from .base import Endpoint, Identity, Target, TargetUnavailable

__all__ = ["Endpoint", "Identity", "Target", "TargetUnavailable"]
