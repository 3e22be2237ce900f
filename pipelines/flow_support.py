"""What the Prefect flow modules (``pipelines/flows*.py``) share."""

from __future__ import annotations

from shuyu_core.errors import ShuyuError


# A user error (bad file, unknown resource) will not heal on retry; I/O hiccups might.
def retry_unless_user_error(_task: object, _run: object, state: object) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task unless it raised a ShuyuError."""
    exc = getattr(state, "result", lambda **_: None)(raise_on_failure=False)
    return not isinstance(exc, ShuyuError)
