"""loraport deploy stage: not built yet (see DESIGN.md)."""
