"""`quantize` console script: a placeholder until the quantization issue lands."""

import sys


def main() -> None:
    """Say plainly that the stage is not built yet, and exit non-zero."""
    print(
        "quantize: not yet. The quantization stage (AWQ/GPTQ/FP8 variants with llm-compressor)\n"
        "is planned; see DESIGN.md. Nothing was changed.",
        file=sys.stderr,
    )
    sys.exit(2)
