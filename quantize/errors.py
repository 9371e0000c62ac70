"""The quantize stage's errors, each with its own exit code (the CLI reads it here).

======================================  ====  =========================================
class                                   exit  when
======================================  ====  =========================================
``RecipeError`` (recipes.py)               2  unknown method, or a recipe file that fails
                                                validation
``UnsupportedArchitectureError``          20  the base's architecture is not one the recipe
                                                handles, or it is already quantized
``CalibrationError``                      21  calibration set missing, empty, too short, or
                                                without ``text`` records
``GateFailedError``                       22  the variant missed its fidelity gate (nothing
                                                registered; ``--force`` registers it anyway)
``WorkerError``                           23  the llm-compressor worker failed (its log tail
                                                is in the message)
``QuantizeEnvironmentError``              24  ``.venv-quantize`` is missing (`make setup`)
``PairsNotEvaluatedError``                25  the evaluation after ``registry push`` could
                                                not measure some pairs (``registry push``
                                                warns and exits 0: the push stands), or
                                                ``quantize eval --pending`` could not
                                                measure some (it measured the rest)
``EvalSetError``                          26  no eval set given (``--eval-set FILE`` or
                                                ``QUANTIZE_EVAL_FILE``), or it is missing,
                                                unreadable or empty
======================================  ====  =========================================

Registry errors keep the registry's own exit codes (``registry.errors``).
"""

from __future__ import annotations


class QuantizeError(Exception):
    """Base of the stage's own errors; never raised bare."""

    exit_code = 1


class UnsupportedArchitectureError(QuantizeError):
    exit_code = 20


class CalibrationError(QuantizeError):
    exit_code = 21


class GateFailedError(QuantizeError):
    exit_code = 22


class WorkerError(QuantizeError):
    exit_code = 23


class QuantizeEnvironmentError(QuantizeError):
    exit_code = 24


class PairsNotEvaluatedError(QuantizeError):
    exit_code = 25


class EvalSetError(QuantizeError):
    """No usable eval set: none given, or missing, unreadable, not JSON lines, or empty."""

    exit_code = 26
