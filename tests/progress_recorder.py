"""What a command's progress display is told, recorded: for the tests of progress within a chunk (score, label)."""

from __future__ import annotations


class ProgressRecorder:
    """Stands in for the CLI's display: record counts (``recorder(n)``) and news of the chunk in hand
    (``recorder.detail(text)``; ``""`` closes a chunk), kept in order."""

    def __init__(self) -> None:
        self.records: list[int] = []
        self.details: list[str] = []

    def __call__(self, n: int) -> None:
        self.records.append(n)

    def detail(self, text: str) -> None:
        self.details.append(text)
