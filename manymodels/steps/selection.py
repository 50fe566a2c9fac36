"""``--groups Store=2,Brand=tropicana``: choosing a subset of groups by value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.identity import jsonable
from ..errors import MMError, did_you_mean


class GroupSelector:
    """Matches groups against one or more ``col=value[,col=value]`` specs (any spec may match).

    Values compare as text, so ``Store=2`` matches the number 2 and the string "2".
    A spec may name only some group columns: ``Store=2`` selects every brand of store 2.
    """

    def __init__(self, specs: Sequence[str], group_columns: Sequence[str]):
        self.columns = list(group_columns)
        self.specs: list[dict[str, str]] = [self._parse(s) for s in specs]

    def _parse(self, spec: str) -> dict[str, str]:
        wanted: dict[str, str] = {}
        for part in spec.split(","):
            column, sep, value = part.partition("=")
            column = column.strip()
            if not sep or not column:
                raise MMError(f"--groups {spec!r}: expected COLUMN=VALUE[,COLUMN=VALUE], e.g. --groups Store=2,Brand=tropicana")
            if column not in self.columns:
                raise MMError(f"--groups {spec!r}: {column!r} is not a group column ({', '.join(self.columns)}).{did_you_mean(column, self.columns)}")
            wanted[column] = value.strip()
        return wanted

    def __bool__(self) -> bool:
        return bool(self.specs)

    def matches(self, values: Sequence[Any] | dict[str, Any]) -> bool:
        if not self.specs:
            return True
        named = values if isinstance(values, dict) else dict(zip(self.columns, values))
        text = {c: str(jsonable(v)) for c, v in named.items()}
        return any(all(text.get(c) == v for c, v in spec.items()) for spec in self.specs)
