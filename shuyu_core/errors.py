"""User-facing errors: one line naming the thing and the fix, never a traceback."""

from __future__ import annotations


class ShuyuError(Exception):
    """An error caused by input or state the user can fix.

    The CLI prints ``message`` (and ``hint`` after "fix:") on one line and exits with
    ``exit_code``; ``--debug`` shows the traceback instead.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Set once an audit entry has recorded this error, so the CLI does not record it twice.
        self.audited = False

    def one_line(self) -> str:
        text = self.message.replace("\n", " ")
        return f"{text} — fix: {self.hint}" if self.hint else text


class NotFoundError(ShuyuError):
    """A named object (resource, product, release, snapshot, ticket) does not exist."""

    exit_code = 3


class ValidationError(ShuyuError):
    """A spec or an input file does not match what the catalog declares."""

    exit_code = 4


class PermissionDenied(ShuyuError):
    """The actor's role does not allow the action, or authorization failed."""

    exit_code = 5


class BudgetExceeded(ShuyuError):
    """A release asks for more privacy budget than remains."""

    exit_code = 6


class IntegrityError(ShuyuError):
    """Evidence does not match its record: a digest, the ledger, the audit chain, an account."""

    exit_code = 8
