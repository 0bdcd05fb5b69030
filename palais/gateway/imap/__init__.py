"""The gateway's own asyncio IMAP server (IMAPS, client certificates only)."""

from palais.gateway.imap.server import start_imap_server

__all__ = ["start_imap_server"]
