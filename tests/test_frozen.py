"""`fast_init` must build exactly what the dataclass-generated `__init__` builds, and refuse the same."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any

import pytest

import core
from core.frozen import ORIGINAL_INIT, fast_init

CALLS = {"made": 0}


def made() -> list[str]:
    CALLS["made"] += 1
    return [f"fresh {CALLS['made']}"]


@fast_init
@dataclass(frozen=True, slots=True)
class Positional:
    role: str
    content: str
    tags: tuple[str, ...] = ()
    note: str | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class KeywordOnly:
    name: str
    items: list[str] = field(default_factory=made)
    size: int = 3
    counted: int = field(init=False, default=7)
    listed: list[str] = field(init=False, default_factory=made)
    checked: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a name is needed")
        object.__setattr__(self, "checked", True)


@fast_init
@dataclass(frozen=True, slots=True)
class Mixed:
    first: int
    second: int = 2
    _: dataclasses.KW_ONLY
    third: str
    fourth: str = "four"


def built_the_dataclass_way(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    instance = object.__new__(cls)
    getattr(cls.__init__, ORIGINAL_INIT)(instance, *args, **kwargs)
    return instance


def field_values(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (Positional, ("user", "hi"), {}),
        (Positional, ("user", "hi", ("a",)), {"note": "n"}),
        (Positional, (), {"content": "hi", "role": "user"}),
        (KeywordOnly, (), {"name": "x"}),
        (KeywordOnly, (), {"name": "x", "items": ["given"], "size": 9}),
        (Mixed, (1,), {"third": "3"}),
        (Mixed, (1, 5), {"third": "3", "fourth": "4"}),
    ],
)
def test_it_builds_what_the_dataclass_init_builds(
    cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    fast, slow = cls(*args, **kwargs), built_the_dataclass_way(cls, *args, **kwargs)
    fast_values, slow_values = field_values(fast), field_values(slow)
    for values in (fast_values, slow_values):  # each factory call makes a new list: compare their shape
        for name in ("items", "listed"):
            if name in values and values[name] and values[name][0].startswith("fresh"):
                values[name] = ["fresh"]
    assert fast_values == slow_values
    assert fast == slow or cls is KeywordOnly  # factory-made lists differ in content by design
    assert hash(Positional("a", "b")) == hash(built_the_dataclass_way(Positional, "a", "b"))


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (Positional, ("user",), {}),  # a required argument missing
        (Positional, ("user", "hi"), {"colour": "red"}),  # an unknown one
        (Positional, ("user", "hi", (), None, "extra"), {}),  # too many
        (Positional, ("user", "hi"), {"role": "again"}),  # given twice
        (KeywordOnly, ("x",), {}),  # keyword-only given by position
        (KeywordOnly, (), {"name": "x", "counted": 1}),  # not an init field
        (Mixed, (1, 2, "3"), {}),
    ],
)
def test_it_refuses_what_the_dataclass_init_refuses(
    cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        built_the_dataclass_way(cls, *args, **kwargs)
    with pytest.raises(TypeError):
        cls(*args, **kwargs)


def test_factories_post_init_and_immutability_hold() -> None:
    a, b = KeywordOnly(name="a"), KeywordOnly(name="b")
    assert a.items is not b.items and a.listed is not b.listed  # one call of the factory per instance
    assert a.checked and a.counted == 7
    with pytest.raises(ValueError, match="a name is needed"):
        KeywordOnly(name="")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "changed"  # type: ignore[misc]


def test_only_frozen_slotted_dataclasses_are_accepted() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclass(slots=True)
    class NotFrozen:
        x: int

    for cls in (NoSlots, NotFrozen, int):
        with pytest.raises(TypeError, match="frozen=True, slots=True"):
            fast_init(cls)


def test_every_class_in_core_keeps_its_signature() -> None:
    # The classes the hot path builds carry fast_init: each must take exactly the parameters,
    # kinds and defaults the dataclass-generated __init__ took.
    decorated = []
    for module_info in pkgutil.walk_packages(core.__path__, "core."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == module.__name__:
                original = getattr(value.__init__, ORIGINAL_INIT, None)
                if original is not None:
                    decorated.append(value.__qualname__)
                    assert str(inspect.signature(value.__init__)) == str(inspect.signature(original)), value
    assert {"ChatMessage", "StoredMessage", "Envelope", "Reply", "ChainResult"} <= set(decorated)
