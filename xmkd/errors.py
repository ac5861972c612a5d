"""Errors for bad input, and the bookkeeping of skipped items.

Every error raised for bad user input names the offending file (or config key) and says why, so
that a researcher with 10,000 videos can find the one broken file without a debugger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BadInputPolicy = Literal["error", "skip"]


class XmkdError(Exception):
    """Base class for errors xmkd raises about user input or configuration."""


class BadInputError(XmkdError, ValueError):
    """A file (media, annotation, features) that cannot be used.

    ``path`` is the file, ``reason`` a short human explanation; ``line`` the 1-based line number
    for text annotations when known.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep the fields when the error crosses a DataLoader worker boundary
        return (type(self), (self.path, self.reason, self.line))


class MediaError(BadInputError):
    """A video or audio file that cannot be decoded (corrupt, truncated, empty, wrong format)."""


class MissingAudioError(MediaError):
    """A container without an audio stream where audio was requested."""


class AnnotationError(BadInputError):
    """A malformed annotation or split file, an unknown class, an out-of-range label."""


class FeatureError(BadInputError):
    """A missing, malformed or non-finite feature file."""


class ConfigError(XmkdError, ValueError):
    """A bad configuration value; the message names the key and what was expected."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}")


@dataclass
class Failure:
    """One skipped item: which file, and why."""

    path: str
    reason: str

    @classmethod
    def from_error(cls, error: BadInputError) -> Failure:
        return cls(path=error.path, reason=error.reason)

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class FailureLog:
    """Counts skipped items by file so that a skip is reported, never silent."""

    failures: list[Failure] = field(default_factory=list)

    def add(self, failure: Failure | BadInputError) -> None:
        if isinstance(failure, BadInputError):
            failure = Failure.from_error(failure)
        self.failures.append(failure)

    def extend(self, failures: Iterable[Failure | dict[str, str]]) -> None:
        for f in failures:
            self.add(Failure(**f) if isinstance(f, dict) else f)

    def __len__(self) -> int:
        return len(self.failures)

    def unique(self) -> list[Failure]:
        seen: dict[tuple[str, str], Failure] = {}
        for f in self.failures:
            seen.setdefault((f.path, f.reason), f)
        return list(seen.values())

    def summary(self, limit: int = 20) -> str:
        unique = self.unique()
        lines = [f"{len(unique)} bad input file(s) skipped:"]
        lines += [f"  {f.path}: {f.reason}" for f in unique[:limit]]
        if len(unique) > limit:
            lines.append(f"  ... and {len(unique) - limit} more")
        return "\n".join(lines)

    def clear(self) -> None:
        self.failures.clear()
