"""Strict fake `tensorrt` modules built from the name tables in `trt_api/`.

    trt = strict_trt("trt-8.5.3")
    trt.LayerType.NORMALIZATION   # AttributeError: LayerType.NORMALIZATION does not exist in TensorRT 8.5.3
    engine = strict_instance(trt, "ICudaEngine", num_io_tensors=2, get_tensor_name=["a", "b"].__getitem__)

The tables (made by `trt_api/make_tables.py` from NVIDIA's pybind11 sources and the RTX and
lean wheels) list every Python name a TensorRT version has, so code under test can touch
only what that version really offers. Nothing here models behaviour beyond names: what a
method returns or a property holds comes from the test (`**values`), and every access is
recorded (`.used`, `.calls`) so a test can also assert which API a branch took.

Conventions:
- Enum members are distinct per enum, hashable, `==` only to themselves, and `int()` gives
  their index in the sorted member list (not TensorRT's numeric value), so `1 << int(m)`
  builds distinct flag bits.
- A value given for a name the version lacks is ignored (one set of values serves a test
  parametrized over versions); reading that name still raises AttributeError.
- Methods: a callable value is called with the arguments, any other value is returned,
  no value returns None. Properties: the value is returned; reading one with no value
  raises `MissingFakeValue`. Setting a writable property stores the value.
- Module functions and class constructors take their values from `strict_trt(label, **values)`;
  calling a class with no value gives a fresh `strict_instance` of it.
"""

from __future__ import annotations

import functools
import json
import types
from pathlib import Path
from typing import Any, Callable

TABLES = Path(__file__).resolve().parent / "trt_api"

PRODUCTS = {"trt": "TensorRT", "rtx": "TensorRT-RTX", "lean": "TensorRT lean runtime"}
# The import names of the modules the tables were made from (the RTX and lean wheels install
# their bindings as `*_bindings` packages).
MODULE_NAMES = {"trt": "tensorrt", "rtx": "tensorrt_rtx_bindings", "lean": "tensorrt_lean_bindings"}

# Protocol dunders a table may list, and what they do when the test gives no value.
_DUNDER_DEFAULTS: dict[str, Callable[..., Any]] = {
    "__enter__": lambda self, *a: self,
    "__exit__": lambda self, *a: None,
}
_DUNDERS = ("__enter__", "__exit__", "__len__", "__getitem__", "__setitem__", "__iter__", "__call__", "__contains__")


class MissingFakeValue(AssertionError):
    """The code read a property that exists in this version but the test gave it no value."""


def labels() -> list[str]:
    """Every table label, e.g. ``trt-8.5.3``, ``rtx-1.7.1``, ``lean-11.4.0``."""
    return sorted(p.stem for p in TABLES.glob("*.json"))


@functools.lru_cache(maxsize=None)
def load_table(label: str) -> dict:
    path = TABLES / f"{label}.json"
    if not path.is_file():
        raise ValueError(f"no TensorRT API table {label!r}; have {labels()}")
    return json.loads(path.read_text())


def _missing(fake: "StrictModule", dotted: str) -> AttributeError:
    return AttributeError(f"{dotted} does not exist in {fake.product} {fake.release}")


class StrictEnumMember:
    """One member of a fake pybind11 enum."""

    __slots__ = ("_enum", "name", "value")

    def __init__(self, enum: type, name: str, value: int) -> None:
        object.__setattr__(self, "_enum", enum)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StrictEnumMember) and other._enum is self._enum and other.name == self.name

    def __hash__(self) -> int:
        return hash((self._enum._fake_key, self.name))

    def __repr__(self) -> str:
        return f"<{self._enum._fake_key}.{self.name}: {self.value}>"

    def __getattr__(self, name: str) -> Any:
        # enum-level extras such as DataType.itemsize read through the member
        enum = object.__getattribute__(self, "_enum")
        if name.startswith("_") or name not in enum._fake_members:
            raise _missing(enum._fake_module, f"{enum._fake_key}.{name}")
        return enum._fake_member_value(self, name)


class _StrictType(type):
    """Metaclass of the fake classes: unknown class attributes raise with the version named."""

    def __getattribute__(cls, name: str) -> Any:
        if not name.startswith("_") and name != "mro":  # enum values live in the class dict
            fake = type.__getattribute__(cls, "_fake_module")
            fake.used.add(f"{type.__getattribute__(cls, '_fake_key')}.{name}")
        return type.__getattribute__(cls, name)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") or name.startswith("_fake"):
            raise AttributeError(name)
        return cls._fake_class_attr(name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._fake_construct(*args, **kwargs)

    def __repr__(cls) -> str:
        return f"<fake class {cls._fake_module.__name__}.{cls._fake_key}>"


class StrictObject:
    """Base of fake pybind11 classes and their instances (see `strict_instance`)."""

    _fake_module: "StrictModule"
    _fake_key: str
    _fake_members: frozenset
    _fake_properties: frozenset
    _fake_readonly: frozenset

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_fake_values", dict(values))
        object.__setattr__(self, "used", set())
        object.__setattr__(self, "calls", [])

    # -- the class object ------------------------------------------------------------------
    @classmethod
    def _fake_class_attr(cls, name: str) -> Any:
        fake, key = cls._fake_module, cls._fake_key
        fake.used.add(f"{key}.{name}")
        target = fake.table["aliases"].get(f"{key}.{name}")
        if target is not None:
            return fake._resolve(target)
        if f"{key}.{name}" in fake.table["classes"]:
            return fake._class(f"{key}.{name}")
        if name not in cls._fake_members:
            raise _missing(fake, f"{key}.{name}")
        return _Unbound(f"{key}.{name}")

    @classmethod
    def _fake_construct(cls, *args: Any, **kwargs: Any) -> Any:
        fake = cls._fake_module
        fake.calls.append((cls._fake_key, args, kwargs))
        value = fake._values.get(cls._fake_key)
        if isinstance(value, StrictObject) or (value is not None and not callable(value)):
            return value
        if value is not None:
            return value(*args, **kwargs)
        return strict_instance(fake, cls._fake_key)

    # -- instances ---------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and name not in type(self)._fake_members:
            raise AttributeError(name)
        cls = type(self)
        key = cls._fake_key
        if name not in cls._fake_members:
            raise _missing(cls._fake_module, f"{key}.{name}")
        self.used.add(name)
        if f"{key}.{name}" in cls._fake_module.table["aliases"] or f"{key}.{name}" in cls._fake_module.table["classes"]:
            return cls._fake_class_attr(name)
        values = object.__getattribute__(self, "_fake_values")
        if name in cls._fake_properties:
            if name not in values:
                fake = cls._fake_module
                raise MissingFakeValue(f"{key}.{name} exists in {fake.product} {fake.release} but the test gave it no value")
            return values[name]
        return _Method(self, name, values.get(name))

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        key = cls._fake_key
        if name not in cls._fake_members:
            raise _missing(cls._fake_module, f"{key}.{name}")
        if name not in cls._fake_properties or name in cls._fake_readonly:
            raise AttributeError(f"{key}.{name} cannot be set in {cls._fake_module.product} {cls._fake_module.release}")
        self.used.add(name)
        self.calls.append((f"{name}=", (value,), {}))
        object.__getattribute__(self, "_fake_values")[name] = value

    def __dir__(self) -> list[str]:
        return sorted(type(self)._fake_members)

    def __repr__(self) -> str:
        return f"<fake {type(self)._fake_module.__name__}.{type(self)._fake_key}>"

    def _fake_dunder(self, name: str, *args: Any) -> Any:
        self.used.add(name)
        self.calls.append((name, args, {}))
        values = object.__getattribute__(self, "_fake_values")
        if name in values:
            value = values[name]
            return value(*args) if callable(value) else value
        if name in _DUNDER_DEFAULTS:
            return _DUNDER_DEFAULTS[name](self, *args)
        raise MissingFakeValue(f"{type(self)._fake_key}.{name} exists but the test gave it no value")


class _Method:
    """A bound method of a fake instance: records the call, then answers from the test's value."""

    def __init__(self, owner: StrictObject, name: str, value: Any) -> None:
        self._owner, self._name, self._value = owner, name, value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._owner.calls.append((self._name, args, kwargs))
        if callable(self._value) and not isinstance(self._value, (StrictObject, StrictEnumMember)):
            return self._value(*args, **kwargs)
        return self._value

    def __repr__(self) -> str:
        return f"<fake method {type(self._owner)._fake_key}.{self._name}>"


class _Unbound:
    """A class-level member that is not an enum value (an unbound method or property)."""

    def __init__(self, dotted: str) -> None:
        self.dotted = dotted

    def __repr__(self) -> str:
        return f"<fake member {self.dotted}>"


class StrictModule(types.ModuleType):
    """A fake `tensorrt` module whose names are exactly those of one table."""

    def __init__(self, label: str, values: dict[str, Any]) -> None:
        prefix, _, release = label.partition("-")
        super().__init__(MODULE_NAMES.get(prefix, "tensorrt"))
        table = load_table(label)
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "product", PRODUCTS.get(prefix, prefix))
        object.__setattr__(self, "release", release)
        object.__setattr__(self, "used", set())
        object.__setattr__(self, "calls", [])
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_classes", {})
        self.__version__ = table["version"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name.startswith("_fake"):
            raise AttributeError(name)
        t = self.table
        if name in t["classes"]:
            self.used.add(name)
            return self._class(name)
        if name in t["aliases"]:
            self.used.add(name)
            return self._resolve(t["aliases"][name])
        if name in t["module"]:
            self.used.add(name)
            return functools.partial(self._call_function, name)
        raise _missing(self, name)

    def __dir__(self) -> list[str]:
        return sorted(set(self.table["module"]) | set(self.table["aliases"]) | {k for k in self.table["classes"] if "." not in k})

    def _call_function(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((name, args, kwargs))
        value = self._values.get(name)
        return value(*args, **kwargs) if callable(value) else value

    def _resolve(self, dotted: str) -> Any:
        """The object a table alias names: a class, an enum, or an enum member."""
        if dotted in self.table["classes"]:
            return self._class(dotted)
        owner, _, member = dotted.rpartition(".")
        return getattr(self._class(owner), member)

    def _class(self, key: str) -> type:
        made = self._classes.get(key)
        if made is not None:
            return made
        t = self.table
        members = frozenset(t["classes"][key])
        properties = frozenset(t["properties"].get(key, ()))
        ns: dict[str, Any] = {
            "_fake_module": self,
            "_fake_key": key,
            "_fake_members": members,
            "_fake_properties": properties,
            "_fake_readonly": frozenset(t["readonly"].get(key, ())),
            "__module__": self.__name__,
            "__qualname__": key,
        }
        if key in t["enums"]:
            cls = _make_enum(self, key, members, properties, ns)
        else:
            for dunder in _DUNDERS:
                if dunder in members:
                    ns[dunder] = functools.partialmethod(StrictObject._fake_dunder, dunder)
            cls = _StrictType(key.rpartition(".")[2], (StrictObject,), ns)
        self._classes[key] = cls
        return cls


def _make_enum(fake: StrictModule, key: str, members: frozenset, properties: frozenset, ns: dict) -> type:
    values = sorted(m for m in members if m not in properties and not m.startswith("_") and f"{key}.{m}" not in fake.table["aliases"])

    def class_attr(cls: type, name: str) -> Any:
        fake.used.add(f"{key}.{name}")
        if name not in members:
            raise _missing(fake, f"{key}.{name}")
        return _Unbound(f"{key}.{name}")

    def construct(cls: type, value: int) -> StrictEnumMember:
        for m in cls.__members__.values():
            if m.value == int(value):
                return m
        raise ValueError(f"{key} has no member {value}")

    def member_value(cls: type, member: StrictEnumMember, name: str) -> Any:
        fake.used.add(f"{key}.{name}")
        given = fake._values.get(f"{key}.{name}")
        if given is None:
            raise MissingFakeValue(f"{key}.{name} exists but the test gave it no value (strict_trt(..., **{{'{key}.{name}': f}}))")
        return given(member) if callable(given) else given

    ns.update(
        _fake_class_attr=classmethod(class_attr),
        _fake_construct=classmethod(construct),
        _fake_member_value=classmethod(member_value),
    )
    cls = _StrictType(key.rpartition(".")[2], (StrictEnumMember,), ns)
    table = {}
    for i, name in enumerate(values):
        member = object.__new__(cls)  # members are instances of their enum, as in pybind11
        StrictEnumMember.__init__(member, cls, name, i)
        type.__setattr__(cls, name, member)
        table[name] = member
    type.__setattr__(cls, "__members__", types.MappingProxyType(table))
    return cls


def strict_trt(label: str, **values: Any) -> StrictModule:
    """A fake TensorRT module with exactly the names of table `label` (see module docstring).

    `values` give module functions their behaviour (``init_libnvinfer_plugins=True``) and
    class constructors their result (``Builder=builder`` or a factory); keys of the form
    ``"Enum.attr"`` give enum-member extras such as ``"DataType.itemsize"``.
    """
    return StrictModule(label, values)


def strict_instance(trt: StrictModule, cls: str, **values: Any) -> StrictObject:
    """An instance of the fake pybind11 class `cls` that allows only that version's members.

    `values` answer properties and methods (see the module docstring); `.used` collects the
    member names the code touched and `.calls` the (name, args, kwargs) of each call or set.
    """
    key = trt.table["aliases"].get(cls, cls)
    if key not in trt.table["classes"]:
        raise _missing(trt, cls)
    if key in trt.table["enums"]:
        raise ValueError(f"{cls} is an enum: use trt.{cls}.<MEMBER>")
    klass = trt._class(key)
    obj = klass.__new__(klass)
    StrictObject.__init__(obj, values)
    return obj


def has(trt_label: str, dotted: str) -> bool:
    """Whether the table `trt_label` has `dotted` (``Name``, ``Class.member``, ``Enum.VALUE``)."""
    t = load_table(trt_label)
    if dotted in t["classes"] or dotted in t["module"] or dotted in t["aliases"]:
        return True
    owner, _, member = dotted.rpartition(".")
    return member in t["classes"].get(t["aliases"].get(owner, owner), ())
