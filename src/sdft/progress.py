"""Rich progress bars: rows/s, generated tokens/s and the acceptance rate so far."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class DistillProgress:
    def __init__(self, total: int, done: int, accepted: int, enabled: bool = True):
        self.enabled = enabled
        self.accepted, self.done = accepted, done
        self.progress = Progress(
            TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s · {task.fields[tps]} tok/s · accepted {task.fields[acc]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)
        self.task = self.progress.add_task("distill", total=total, completed=done, rate="-", tps="-",
                                           acc=self._acc())
        self.rows_this_run = 0

    def _acc(self) -> str:
        return f"{self.accepted / self.done:.0%}" if self.done else "-"

    def advance(self, rows: int, accepted: int, tokens: int, seconds: float, total_tokens: int) -> None:
        self.done += rows
        self.accepted += accepted
        self.rows_this_run += rows
        self.progress.update(self.task, advance=rows, acc=self._acc(),
                             rate=f"{self.rows_this_run / seconds:.2f}" if seconds else "-",
                             tps=f"{total_tokens / seconds:.0f}" if seconds else "-")

    def __enter__(self) -> "DistillProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


class simple_progress:
    """``with simple_progress("gsm8k", total, done) as advance: advance(n)`` — one bar with rate and ETA."""

    def __init__(self, label: str, total: int, done: int = 0, enabled: bool = True):
        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)
        self.task = self.progress.add_task(label, total=total, completed=done)

    def __enter__(self):
        self.progress.__enter__()
        return lambda n: self.progress.update(self.task, advance=n)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
