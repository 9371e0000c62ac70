"""What tests and `bench/` both need, in one place: the demo zoo and a registry holding
it (`zoo`), synthetic models and adapters of any shape (`synthetic`), and real vLLM and
gateway processes launched exactly as in production (`launch`)."""
