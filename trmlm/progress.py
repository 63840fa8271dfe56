"""Progress-bar pieces for the training loops (rich)."""

from __future__ import annotations

from datetime import timedelta

from rich.progress import ProgressColumn
from rich.text import Text


class TimeLeftColumn(ProgressColumn):
    """Time left in a training run: the step-count estimate, or what is left of the time budget
    (task field `budget_left`, seconds) when that is sooner, since the budget then ends the run."""

    max_refresh = 0.5

    def render(self, task) -> Text:
        left = task.time_remaining
        budget = task.fields.get("budget_left")
        if budget is not None:
            left = budget if left is None else min(left, budget)
        if left is None:
            return Text("-:--:--", style="progress.remaining")
        return Text(str(timedelta(seconds=max(0, int(left)))), style="progress.remaining")
