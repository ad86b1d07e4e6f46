"""stepledger: a PostgreSQL-native ledger for client pipeline steps."""

__version__ = "0.1.0"


class StepledgerError(Exception):
    """An expected failure: the CLI prints its message on one line and exits non-zero."""


__all__ = ["StepledgerError", "__version__"]
