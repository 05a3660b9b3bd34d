"""The process benchmark's lower bound counts the calls the work needs, not the calls made."""

from __future__ import annotations

import importlib.util
import inspect
from types import ModuleType

import pytest
from conftest import REPO


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "process_bench", REPO / "benchmarks" / "process.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("concurrency", "rate", "expected"),
    [
        (32, 0.0, 7.25),  # tuned: 2,000 calls x 0.1 s / 32 + 1 s
        (8, 5.0, 401.0),  # shipped defaults: 2,000 calls at 5/s + 1 s
    ],
)
def test_bound_is_two_calls_per_reserve(concurrency: int, rate: float, expected: float) -> None:
    bound = _benchmark().lower_bound(
        items=1000, latency=0.1, poll_delay=1.0, concurrency=concurrency, rate=rate
    )
    assert bound == pytest.approx(expected)


def test_bound_takes_no_count_of_calls_made() -> None:
    # Extra polls must not raise the bound they are measured against.
    parameters = inspect.signature(_benchmark().lower_bound).parameters
    assert "calls" not in parameters and "calls_made" not in parameters
