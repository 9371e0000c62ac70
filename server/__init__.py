"""loraport's gateway: an OpenAI-compatible API over vLLM, serving every adapter version
of the registry. Build the app with :func:`server.app.create_app`; run it with
`gateway serve`."""
