"""loraport quantize: AWQ, GPTQ and FP8 variants of a registered base model, each
measured against its parent alone and under every adapter, gated, and registered as a
variant (``quantize run``); adapters re-measured on a variant (``quantize eval``); an
adapter merged into its base as a single-tenant deployment (``quantize merge``). See
docs/quantize.md.
"""
