"""The registry as an HTTP service (``registry serve``).

:mod:`.app` builds the FastAPI app, :mod:`.ops` is the table of operations it shares with
the client (:mod:`registry.http_client`), :mod:`.tokens` says who may call, :mod:`.run`
starts it. Nothing is imported here, so the client does not pull in the server's stack.
"""
