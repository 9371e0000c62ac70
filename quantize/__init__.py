"""loraport quantize stage: not built yet (see DESIGN.md)."""
