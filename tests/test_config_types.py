"""Strict config types: each annotation kind accepts what it should and names section.key when it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedicd.config import load_config
from fedicd.config_types import check_section_values
from fedicd.errors import ConfigError


@dataclass(frozen=True)
class Section:
    flag: bool = False
    count: int = 1
    rate: float = 0.5
    name: str = "a"
    maybe: int | None = None
    ids: tuple[int, ...] = ()
    triple: tuple[float, float, float] = (0.7, 0.15, 0.15)
    kind: Literal["x", "y"] = "x"
    number: int | float = 1


@pytest.mark.parametrize("key, value, message", [
    ("flag", 1, "s.flag must be true or false, got 1 (an integer)"),
    ("count", True, "s.count must be an integer, got true (a boolean)"),
    ("count", 2.5, "s.count must be an integer, got 2.5 (a number)"),
    ("count", 2.0, "s.count must be an integer, got 2.0 (a number)"),
    ("count", "3", "s.count must be an integer, got '3' (a string)"),
    ("rate", False, "s.rate must be a finite number, got false (a boolean)"),
    ("rate", float("nan"), "s.rate must be a finite number, got nan"),
    ("rate", float("-inf"), "s.rate must be a finite number, got -inf"),
    ("name", 3, "s.name must be a string, got 3 (an integer)"),
    ("maybe", 1.5, "s.maybe must be an integer, got 1.5"),
    ("ids", [1, "2"], "s.ids must be an array of integers, got [1, '2'] (an array)"),
    ("ids", 3, "s.ids must be an array of integers, got 3 (an integer)"),
    ("triple", [0.5, 0.5], "s.triple must be an array of 3 values"),
    ("kind", "z", "s.kind must be one of ['x', 'y'], got 'z'"),
    ("number", True, "s.number must be an integer or a finite number, got true"),
])
def test_wrong_types_are_refused_by_name(key, value, message):
    with pytest.raises(ConfigError) as info:
        check_section_values("s", Section, {key: value})
    assert str(info.value).startswith(message)


def test_accepted_values_are_coerced():
    out = check_section_values("s", Section, {"rate": 2, "ids": [1, 2], "triple": [1, 0, 0], "maybe": 4,
                                              "kind": "y", "number": 2.5, "flag": True})
    assert out == {"rate": 2.0, "ids": (1, 2), "triple": (1.0, 0.0, 0.0), "maybe": 4, "kind": "y",
                   "number": 2.5, "flag": True}
    assert isinstance(out["rate"], float) and isinstance(out["ids"], tuple)


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_any_integer_is_an_integer_and_a_number(n):
    out = check_section_values("s", Section, {"count": n, "rate": n})
    assert out["count"] == n and out["rate"] == float(n) and type(out["count"]) is int


@pytest.mark.parametrize("override, message", [
    ("federated.rounds=true", "federated.rounds must be an integer, got true (a boolean)"),
    ("train.epochs=2.5", "train.epochs must be an integer, got 2.5"),
    ("federated.rounds=ten", "federated.rounds must be an integer, got 'ten' (a string)"),
    ("seed=1.0", "seed must be an integer, got 1.0"),
    ("train.lr=nan", "train.lr must be a finite number, got nan"),
    ("data.fractions=[0.5, 0.5, 0.1]", "data.fractions must be three numbers in (0, 1)"),
])
def test_load_config_checks_every_section_and_the_top_level(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config(None, [override])
