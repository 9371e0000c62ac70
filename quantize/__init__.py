"""loraport quantize stage: AWQ, GPTQ and FP8 variants of a registered base model, measured
against its adapters and registered with their fidelity (docs/quantize.md)."""
