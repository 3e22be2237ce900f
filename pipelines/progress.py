"""Rich progress helpers shared by CLI commands."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def steps(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner whose text follows the current step of a long operation."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]}[/]: {task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", title=title, total=None)

        def update(message: str) -> None:
            progress.update(task, description=message)

        yield update
