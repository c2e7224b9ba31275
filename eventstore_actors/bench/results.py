"""One row of the report: a figure through the API, the same through raw psycopg, a target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Result", "Target"]

Check = Literal["ratio>=", "api>=", "api<="]


@dataclass(frozen=True)
class Target:
    """What the API figure must reach: a ratio to raw, or an absolute bound on the API figure."""

    check: Check
    value: float
    label: str

    def passed(self, api: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.check == "ratio>=" else api
        if subject is None:
            return None
        return subject <= self.value if self.check == "api<=" else subject >= self.value


@dataclass(frozen=True)
class Result:
    """`api` and `raw` are in `unit`; `higher_is_better` says which way `ratio` reads."""

    workload: str
    name: str
    unit: str
    api: float | None
    raw: float | None
    target: Target | None = None
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """API relative to raw, >1 meaning better than raw whichever way the unit reads."""
        if self.api is None or self.raw is None or self.api == 0 or self.raw == 0:
            return None
        return self.api / self.raw if self.higher_is_better else self.raw / self.api

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.target.passed(self.api, self.ratio)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["passed"] = self.passed
        return out
