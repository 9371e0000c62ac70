"""deploy's own errors, each with its own exit code (the CLI reads it here).

======================================  ====  =========================================
class                                   exit  when
======================================  ====  =========================================
``EvalSetError``                           2  the ``--eval`` file is missing, unreadable,
                                                or not an eval set (a usage error)
``EvalSetUnusableError``                  40  the eval set cannot tell a good canary from
                                                a bad one: an expected answer without a
                                                word, or the stable version scores 0
``EvalRegressionError``                   41  the canary scored more than
                                                ``--max-regression`` below stable
``EvalGatewayError``                      42  the gateway could not be asked, or answered
                                                an error or something that is not a chat
                                                completion
======================================  ====  =========================================

All of them happen before the rollout starts: nothing was written and no traffic moved.
Exit 0 is a promoted rollout and 1 one rolled back or aborted (``deploy canary``); the
registry's errors keep the registry's own codes (``registry.errors``), which these never
reuse.
"""

from __future__ import annotations

from typing import ClassVar


class DeployError(Exception):
    """Base of deploy's own errors; never raised bare."""

    exit_code: ClassVar[int] = 1


class EvalSetError(DeployError):
    exit_code = 2


class EvalSetUnusableError(DeployError):
    exit_code = 40


class EvalRegressionError(DeployError):
    exit_code = 41


class EvalGatewayError(DeployError):
    exit_code = 42


def error_classes() -> tuple[type[DeployError], ...]:
    """Every class that may be raised (the table above)."""
    return (EvalSetError, EvalSetUnusableError, EvalRegressionError, EvalGatewayError)
