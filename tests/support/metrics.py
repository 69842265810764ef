"""Reading a ``/metrics`` answer the way Prometheus does: prometheus-client's text-format parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["Scrape"]


class Scrape:
    """A parsed exposition: its families by name, and its samples."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    @property
    def names(self) -> set[str]:
        """Every sample name (``x_total``, ``x_bucket``, ``x_count``, ...): what a query may use."""
        return {s.name for s in self.samples}

    def find(self, name: str, **labels: str) -> list[Sample]:
        """The samples named ``name`` whose labels include ``labels``."""
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, **labels: str) -> float:
        """The one sample named ``name`` with ``labels`` (AssertionError if none or several)."""
        found = self.find(name, **labels)
        assert len(found) == 1, f"{len(found)} samples {name}{labels}: {found}"
        return found[0].value

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` with ``labels`` (0 if none)."""
        return sum(s.value for s in self.find(name, **labels))
