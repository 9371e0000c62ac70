"""`deploy` console script: a placeholder until the canary-rollout issue lands."""

import sys


def main() -> None:
    """Say plainly that the stage is not built yet, and exit non-zero."""
    print(
        "deploy: not yet. Canary rollouts (deploy canary/status/promote/abort) are planned;\n"
        "see DESIGN.md. Nothing was changed.",
        file=sys.stderr,
    )
    sys.exit(2)
