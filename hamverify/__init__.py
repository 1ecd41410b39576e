"""hamverify: train ReLU networks that are easy to verify, then prove their robustness exactly."""

__version__ = "0.1.0"


class HamverifyError(Exception):
    """An error a user can fix; the CLI prints its message on one line and exits non-zero."""
