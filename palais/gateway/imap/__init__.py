"""The gateway's own asyncio IMAP server (IMAPS, client certificates only).

Module map, one idea each:

- ``server``: the listener, identity resolution, one log line per connection.
- ``session``: the command loop, state checks, error translation, notifications.
- ``states``: session state objects and the one rule of what each permits.
- ``commands/``: one handler per verb, declared with its syntax and states.
- ``framing`` / ``parser`` / ``fetchspec`` / ``searchspec``: client grammar.
- ``response`` / ``values`` / ``mutf7``: server-side encoding.
- ``headers`` / ``envelope`` / ``mime``: message structure on the original bytes.
- ``searching`` / ``textsearch``: evaluating SEARCH programs.
- ``pacing``: long scans (SEARCH, FETCH 1:*) give the event loop back every 2 ms.
- ``view``: a selected mailbox's UID map and pending changes.
- ``codes``: response codes and capabilities as named constants.
"""

from palais.gateway.imap.server import start_imap_server

__all__ = ["start_imap_server"]
