"""Regenerate the TensorRT API name tables in this folder (not run by the tests).

    python tests/export/trt_api/make_tables.py sources --repo GIT_DIR
    python tests/export/trt_api/make_tables.py wheel --label rtx-1.7.1 BINDINGS.whl LIBS.whl

README: each ``<label>.json`` lists the Python names one TensorRT-family module has, so
``tests/export/trt_fakes.py`` can build a fake ``tensorrt`` that refuses any name the real
version lacks. ``sources`` reads NVIDIA's pybind11 sources (``python/src/**/*.cpp`` and the
bindings package ``__init__.py``) at the git tags in ``TAGS`` from a clone of
github.com/NVIDIA/TensorRT (a bare git dir is fine: files are read with ``git show``).
``wheel`` unpacks the given bindings + libs wheels into a temporary folder and introspects
the imported module (it needs a Python matching the wheels' cpXY tag; no GPU).

A table holds: ``version``, ``source``, ``module`` (module-level functions and values that
are neither classes nor aliases), ``classes`` ({class or enum: sorted member names, inherited ones included;
nested enums appear as ``Outer.Inner``}), ``enums`` (which of ``classes`` are enums),
``properties`` / ``readonly`` (attribute-like members, and those that cannot be set) and
``aliases`` (module names bound to another class or to an enum member, e.g.
``float16 -> DataType.HALF``). Class members keep only non-dunder names and the protocol
dunders in ``KEPT_DUNDERS``. Both modes check ``KNOWN_FACTS`` against what they produced.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent

# tag -> label; the newest tag of each claimed release line in NVIDIA/TensorRT.
TAGS = {
    "8.5.3": "trt-8.5.3",
    "v8.6.1": "trt-8.6.1",
    "v10.3.0": "trt-10.3.0",
    "v10.13.3": "trt-10.13.3",
    "v11.1": "trt-11.1.0",
}

# Dunders that code calls through protocols; every other dunder is pybind11 plumbing.
KEPT_DUNDERS = frozenset(
    {"__enter__", "__exit__", "__len__", "__getitem__", "__setitem__", "__iter__", "__call__", "__del__", "__contains__"}
)

# Preprocessor values of the full `tensorrt` bindings as NVIDIA builds them.
DEFINES = {
    "EXPORT_ALL_BINDINGS": 1,  # ForwardDeclarations.h: full bindings (not lean/dispatch)
    "tensorrt_EXPORTS": 1,
    "ENABLE_INETWORK_SERIALIZE": 0,  # CMake option, off in released wheels
    "PYBIND11_VERSION_MAJOR": 2,
    "PYBIND11_VERSION_MINOR": 13,
}

# (label prefix or exact label, dotted name, expected presence).  A prefix "trt-" means
# every source table.  These are facts read from the sources/release notes by hand;
# a table that contradicts one means the parser went wrong.
KNOWN_FACTS: list[tuple[str, str, bool]] = [
    ("trt-8.5.3", "LayerType.NORMALIZATION", False),
    ("trt-8.6.1", "LayerType.NORMALIZATION", True),
    ("trt-10.3.0", "LayerType.NORMALIZATION", True),
    ("trt-8.6.1", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", False),
    ("trt-10.3.0", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", True),
    ("trt-10.13.3", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", True),
    ("trt-8.5.3", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH", True),
    ("trt-8.5.3", "BuilderFlag.FP16", True),
    ("trt-8.6.1", "BuilderFlag.FP16", True),
    ("trt-10.3.0", "BuilderFlag.FP16", True),
    ("trt-10.13.3", "BuilderFlag.FP16", True),
    ("trt-11.1.0", "BuilderFlag.FP16", False),
    ("trt-", "BuilderFlag.TF32", True),
    ("trt-10.13.3", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", True),
    ("trt-11.1.0", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", False),
    ("trt-8.6.1", "ICudaEngine.device_memory_size_v2", False),
    ("trt-10.3.0", "ICudaEngine.device_memory_size_v2", True),
    ("trt-8.6.1", "ExecutionContextAllocationStrategy", False),
    ("trt-10.3.0", "ExecutionContextAllocationStrategy.USER_MANAGED", True),
    ("trt-10.3.0", "IExecutionContext.set_device_memory", True),
    ("trt-8.5.3", "OnnxParserFlag", False),
    ("trt-8.6.1", "OnnxParserFlag.NATIVE_INSTANCENORM", True),
    ("trt-", "IExecutionContext.execute_async_v3", True),
    ("trt-", "IExecutionContext.set_input_shape", True),
    ("trt-", "IExecutionContext.set_tensor_address", True),
    ("trt-", "ICudaEngine.create_execution_context", True),
    ("trt-", "ILayer.type", True),
    ("trt-", "Logger.WARNING", True),
    ("trt-", "init_libnvinfer_plugins", True),
    ("trt-", "float16", True),
    ("trt-", "__version__", True),
    ("trt-8.5.3", "Builder.build_serialized_network", True),
    ("trt-8.5.3", "MemoryPoolType.WORKSPACE", True),
    ("rtx-", "BuilderFlag.FP16", False),
    ("rtx-", "init_libnvinfer_plugins", True),
    ("rtx-", "OnnxParser", True),
    ("lean-", "Runtime.deserialize_cuda_engine", True),
    ("lean-", "OnnxParser", False),
    ("lean-", "Builder", False),
]


@dataclass
class Table:
    """Names of one module, filled by either reader and written as JSON."""

    version: str
    source: str
    module: set[str] = field(default_factory=set)
    classes: dict[str, set[str]] = field(default_factory=dict)
    enums: set[str] = field(default_factory=set)
    properties: dict[str, set[str]] = field(default_factory=dict)
    readonly: dict[str, set[str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        def members(d: dict[str, set[str]]) -> dict[str, list[str]]:
            return {k: sorted(filter(is_api, v)) for k, v in sorted(d.items()) if any(map(is_api, v))}

        return {
            "version": self.version,
            "source": self.source,
            "module": sorted(self.module - set(self.classes) - set(self.aliases)),
            "classes": {k: sorted(filter(is_api, v)) for k, v in sorted(self.classes.items())},
            "enums": sorted(self.enums),
            "properties": members(self.properties),
            "readonly": members(self.readonly),
            "aliases": dict(sorted(self.aliases.items())),
        }


def is_api(name: str) -> bool:
    """False for pybind11 plumbing: private names and dunders outside KEPT_DUNDERS."""
    return not name.startswith("_") or name in KEPT_DUNDERS


def has_name(table: dict, dotted: str) -> bool:
    """Whether `dotted` (``Name``, ``Class.member`` or ``Outer.Inner.member``) is in a table."""
    if dotted in table["classes"] or dotted in table["module"] or dotted in table["aliases"]:
        return True
    owner, _, member = dotted.rpartition(".")
    owner = table["aliases"].get(owner, owner)
    return member in table["classes"].get(owner, ())


def check_facts(label: str, table: dict) -> list[str]:
    wrong = []
    for prefix, dotted, present in KNOWN_FACTS:
        if label == prefix or (prefix.endswith("-") and label.startswith(prefix)):
            if has_name(table, dotted) != present:
                wrong.append(f"{label}: {dotted} expected {'present' if present else 'absent'}")
    return wrong


# ----------------------------------------------------------------------------------------
# Reading the pybind11 sources
# ----------------------------------------------------------------------------------------

_STRING = re.compile(r'R"([^(\s]*)\((?:.|\n)*?\)\1"|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments, leaving string and char literals intact."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            out.append(" ")
            i = n if j < 0 else j + 2
        elif text[i] in "\"'R":
            m = _STRING.match(text, i)
            if m and (text[i] != "R" or not (text[i - 1 : i].isalnum() or text[i - 1 : i] == "_")):
                out.append(m.group(0))
                i = m.end()
            else:
                out.append(text[i])
                i += 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _eval_condition(expr: str, defines: dict[str, int]) -> bool:
    expr = re.sub(r"defined\s*\(\s*(\w+)\s*\)|defined\s+(\w+)", lambda m: str(int((m.group(1) or m.group(2)) in defines)), expr)
    expr = expr.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: m.group(0) if m.group(0) in ("and", "or", "not") else str(defines.get(m.group(0), 0)), expr)
    return bool(eval(expr, {"__builtins__": {}}, {}))  # noqa: S307 - digits and operators only


def preprocess(text: str, defines: dict[str, int]) -> str:
    """Keep the lines of active #if branches; directives become blank lines."""
    defines = dict(defines)
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (branch active, some branch already taken)
    active = True
    lines = text.replace("\\\n", " ").split("\n")
    for line in lines:
        s = line.strip()
        m = re.match(r"#\s*(\w+)\s*(.*)", s)
        if not m:
            out.append(line if active else "")
            continue
        d, arg = m.groups()
        if d in ("if", "ifdef", "ifndef"):
            if d == "if":
                cond = _eval_condition(arg, defines)
            else:
                cond = (arg.split()[0] in defines) == (d == "ifdef")
            stack.append((active, active and cond))
            active = active and cond
        elif d == "elif":
            outer, taken = stack[-1]
            cond = outer and not taken and _eval_condition(arg, defines)
            stack[-1] = (outer, taken or cond)
            active = cond
        elif d == "else":
            outer, taken = stack[-1]
            active = outer and not taken
            stack[-1] = (outer, True)
        elif d == "endif":
            active = stack.pop()[0] if stack else True
        elif d == "define" and active:
            parts = arg.split(None, 1)
            if parts and "(" not in parts[0]:
                try:
                    defines[parts[0]] = int(parts[1]) if len(parts) > 1 else 1
                except ValueError:
                    defines[parts[0]] = 1
        out.append("")
    return "\n".join(out)


def _match(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket matching text[i] (== open_), skipping literals."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            m = _STRING.match(text, i)
            if m:
                i = m.end()
                continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_} at {text[:80]!r}")


def _split_args(s: str, angle: bool = False) -> list[str]:
    """Split an argument string at its top-level commas (`angle`: <> nest too, for templates)."""
    opens, closes = ("([{<", ")]}>") if angle else ("([{", ")]}")
    args, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c in "\"'":
            m = _STRING.match(s, i)
            if m:
                cur.append(m.group(0))
                i = m.end()
                continue
        if c in opens:
            depth += 1
        elif c in closes:
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        args.append("".join(cur).strip())
    return args


def _literal(arg: str) -> str | None:
    m = re.fullmatch(r'"((?:\\.|[^"\\])*)"', arg.strip())
    return m.group(1) if m else None


PROPERTY_CALLS = {"def_property", "def_property_readonly", "def_readwrite", "def_readonly", "def_property_static", "def_property_readonly_static", "def_readonly_static", "def_readwrite_static"}
READONLY_CALLS = {"def_property_readonly", "def_readonly", "def_property_readonly_static", "def_readonly_static"}
METHOD_CALLS = {"def", "def_static"}


@dataclass
class Binding:
    py_name: str  # dotted for nested enums
    cpp_type: str
    bases: list[str]
    is_enum: bool
    scope: str  # "m" or the variable holding the enclosing class binding
    members: set[str] = field(default_factory=set)
    properties: set[str] = field(default_factory=set)
    readonly: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)  # C++ enumerator -> Python name
    exported: bool = False


class SourceReader:
    """Collects the bindings of one tag's pybind11 sources."""

    def __init__(self) -> None:
        self.bindings: dict[str, Binding] = {}
        self.by_var: dict[str, str] = {}
        self.module: set[str] = set()
        self.module_attrs: dict[str, str] = {}  # name -> C++ right-hand side
        self.seen_def_names: set[str] = set()
        self.member_aliases: dict[tuple[str, str], str] = {}  # (class, member) -> dotted target

    def read(self, text: str) -> None:
        text = preprocess(strip_comments(text), DEFINES)
        for m in re.finditer(r'\.(def\w*|value)\s*\(\s*"([^"]+)"', text):
            self.seen_def_names.add(m.group(2))
        pos = 0
        pattern = re.compile(r"py::(class_|enum_|bind_vector|bind_map)\s*<|\bm\s*\.\s*(def|attr)\s*\(|\b(\w+)\s*\.\s*(?=def\w*\s*\()")
        while True:
            m = pattern.search(text, pos)
            if not m:
                break
            if m.group(1):
                pos = self._binding(text, m)
            elif m.group(2):
                pos = self._module_member(text, m)
            else:
                var = m.group(3)
                if var in self.by_var:
                    pos = self._chain(text, m.end(3), self.bindings[self.by_var[var]])
                else:
                    pos = m.end()

    def _binding(self, text: str, m: re.Match) -> int:
        kind = m.group(1)
        lt = m.end() - 1
        gt = _match(text, lt, "<", ">")
        targs = _split_args(text[lt + 1 : gt - 1], angle=True)
        rest = text[gt:]
        var_m = re.match(r"\s*(\w+)?\s*([({])", rest)
        if not var_m:
            return gt
        var = var_m.group(1)
        open_at = gt + var_m.start(2)
        close_at = _match(text, open_at, var_m.group(2), ")" if var_m.group(2) == "(" else "}")
        args = _split_args(text[open_at + 1 : close_at - 1])
        name = _literal(args[1]) if len(args) > 1 else None
        if name is None:
            return close_at
        scope = args[0].strip()
        cpp = targs[0].strip()
        if scope != "m":
            outer = self.by_var.get(scope) or self._py_name_of_cpp(scope)
            if outer is None:
                raise ValueError(f"unknown binding scope {scope!r} for {name}")
            self.bindings[outer].members.add(name)
            name = f"{outer}.{name}"
        b = Binding(name, cpp, [t.strip() for t in targs[1:]], kind == "enum_", scope)
        if kind in ("bind_vector", "bind_map"):
            # what pybind11/stl_bind.h adds: maps, vectors, and more for vectors of numbers
            b.members |= {"__len__", "__getitem__", "__setitem__", "__iter__"}
            if kind == "bind_map":
                b.members |= {"items", "keys", "values", "__contains__"}
            else:
                b.members |= {"append", "extend", "insert", "pop", "clear"}
                if re.fullmatch(r"std::vector<\s*(size_t|u?int\d*_t|int|float|double|bool)\s*>", cpp):
                    b.members |= {"count", "remove", "__contains__"}
        self.bindings[name] = b
        if var:
            self.by_var[var] = name
        return self._chain(text, close_at, b)

    def _py_name_of_cpp(self, cpp: str) -> str | None:
        for b in self.bindings.values():
            if b.cpp_type == cpp:
                return b.py_name
        return None

    def _chain(self, text: str, pos: int, b: Binding) -> int:
        """Read `.def("x", ...)...` calls chained at `pos` into binding `b`."""
        while True:
            m = re.compile(r"\s*\.\s*(\w+)\s*\(").match(text, pos)
            if not m:
                return pos
            call = m.group(1)
            close = _match(text, m.end() - 1, "(", ")")
            args = _split_args(text[m.end() : close - 1])
            name = _literal(args[0]) if args else None
            if call == "export_values":
                b.exported = True
            elif name is not None and (call in METHOD_CALLS or call in PROPERTY_CALLS or call == "value"):
                b.members.add(name)
                if call in PROPERTY_CALLS:
                    b.properties.add(name)
                    if call in READONLY_CALLS:
                        b.readonly.add(name)
                if call == "value" and len(args) > 1:
                    b.values[args[1].strip()] = name
            pos = close

    def _module_member(self, text: str, m: re.Match) -> int:
        close = _match(text, m.end() - 1, "(", ")")
        args = _split_args(text[m.end() : close - 1])
        name = _literal(args[0]) if args else None
        if name is None:
            return close
        if m.group(2) == "def":
            self.module.add(name)
            return close
        rhs = re.match(r"\s*=\s*([^;]+);", text[close:])
        if rhs:  # an assignment; reads such as m.attr("x").is_none() add no name
            self.module_attrs[name] = rhs.group(1).strip()
        return close

    def table(self, version: str, source: str) -> Table:
        t = Table(version, source, module=set(self.module))
        cpp_to_py: dict[str, str] = {}
        for b in self.bindings.values():
            cpp_to_py.setdefault(b.cpp_type, b.py_name)

        def ancestors(name: str) -> list[str]:
            """`name` and its bound base classes, nearest first."""
            out = [name]
            for base in self.bindings[name].bases:
                base_py = cpp_to_py.get(base)
                if base_py and base_py not in out:
                    out += [a for a in ancestors(base_py) if a not in out]
            return out

        for name, b in self.bindings.items():
            if b.exported:  # export_values copies enum members into the enclosing scope
                outer = b.py_name.rpartition(".")[0]
                if outer:
                    self.bindings[outer].members |= set(b.values.values())
                    for v in b.values.values():
                        self.member_aliases[(outer, v)] = f"{name}.{v}"
                else:
                    t.module |= set(b.values.values())
                    t.aliases.update({v: f"{name}.{v}" for v in b.values.values()})
        for name, b in self.bindings.items():
            chain = ancestors(name)
            t.classes[name], t.properties[name], t.readonly[name] = set(), set(), set()
            for a in chain:  # the nearest definition of a name decides its kind
                ab = self.bindings[a]
                for member in ab.members - t.classes[name]:
                    t.classes[name].add(member)
                    if member in ab.properties:
                        t.properties[name].add(member)
                    if member in ab.readonly:
                        t.readonly[name].add(member)
            if b.is_enum:
                t.enums.add(name)
            for a in chain:  # nested enums and their exported values, inherited too
                for member in self.bindings[a].members:
                    if a != name and f"{a}.{member}" in self.bindings:
                        t.aliases.setdefault(f"{name}.{member}", f"{a}.{member}")
                    target = self.member_aliases.get((a, member))
                    if target:
                        t.aliases.setdefault(f"{name}.{member}", target)
        for name, rhs in self.module_attrs.items():
            alias = re.fullmatch(r'm\s*\.\s*attr\s*\(\s*"(\w+)"\s*\)', rhs)
            enum_value = re.fullmatch(r"(\w+)::(\w+)", rhs)
            if alias and alias.group(1) in t.classes:
                t.aliases[name] = alias.group(1)
            elif enum_value and cpp_to_py.get(enum_value.group(1)) in t.enums:
                enum_py = cpp_to_py[enum_value.group(1)]
                value = self.bindings[enum_py].values.get(rhs)
                if value is None:
                    raise ValueError(f"m.attr({name!r}) = {rhs}: no such .value() in {enum_py}")
                t.aliases[name] = f"{enum_py}.{value}"
            t.module.add(name)
        return t


def read_package_init(text: str, reader: SourceReader) -> None:
    """Add what the bindings package's Python __init__ defines on top of the extension."""
    text = text.replace("##TENSORRT_MODULE##", "tensorrt")
    text = re.sub(r"##\w+##", "0", text)
    classes = reader.bindings

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                reader.module.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "__version__":
                        reader.module.add("__version__")
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in classes:
                        owner = classes[target.value.id]
                        owner.members.add(target.attr)
                        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "property":
                            owner.properties.add(target.attr)
                            owner.readonly.add(target.attr)
                        value = ast.unparse(node.value)
                        if value in classes:  # Logger.Severity = ILogger.Severity
                            reader.member_aliases[(owner.py_name, target.attr)] = value
            elif isinstance(node, ast.If):
                try:
                    cond = eval(compile(ast.Expression(node.test), "<if>", "eval"), {"__builtins__": {}}, {})  # noqa: S307
                except Exception:
                    continue  # depends on the platform or the environment: not an API difference
                walk(node.body if cond else node.orelse)
            elif isinstance(node, ast.For) and isinstance(node.iter, ast.Call):
                # for attr, value in ILogger.Severity.__members__.items(): setattr(Logger, attr, value)
                # (the loop variables stay behind as module attributes)
                reader.module |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
                m = re.fullmatch(r"([\w.]+)\.__members__\.items", ast.unparse(node.iter.func))
                for stmt in node.body:
                    call = stmt.value if isinstance(stmt, ast.Expr) else None
                    if m and isinstance(call, ast.Call) and getattr(call.func, "id", "") == "setattr":
                        owner, enum = ast.unparse(call.args[0]), m.group(1)
                        if owner in classes and enum in classes:
                            for v in classes[enum].values.values():
                                classes[owner].members.add(v)
                                reader.member_aliases[(owner, v)] = f"{enum}.{v}"

    walk(ast.parse(text).body)


def git_show(repo: str, tag: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, "show", f"{tag}:{path}"], check=True, capture_output=True, text=True).stdout


def read_tag(repo: str, tag: str) -> tuple[Table, SourceReader]:
    files = subprocess.run(["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", tag, "python/src"], check=True, capture_output=True, text=True).stdout.split()
    cpp = [f for f in files if f.endswith(".cpp")]
    # pyTensorRT.cpp binds first (FallbackString); the rest in NVIDIA's bind order, so that
    # a class is known before another file names it as a base or a scope.
    order = ["pyTensorRT.cpp", "pyFoundationalTypes.cpp", "pyPlugin.cpp", "pyInt8.cpp", "pyGraph.cpp", "pyAlgorithmSelector.cpp", "pyCore.cpp", "pyOnnx.cpp", "pyUff.cpp", "pyCaffe.cpp"]
    cpp.sort(key=lambda f: order.index(Path(f).name) if Path(f).name in order else len(order))
    reader = SourceReader()
    for f in cpp:
        reader.read(git_show(repo, tag, f))
    header = git_show(repo, tag, "include/NvInferVersion.h")
    nums = dict(re.findall(r"#define\s+(\w+)\s+(\d+)", header))
    parts = [nums.get(f"NV_TENSORRT_{p}") or nums.get(f"TRT_{p}_ENTERPRISE") for p in ("MAJOR", "MINOR", "PATCH", "BUILD")]
    version = ".".join(parts)
    inits = [f for f in subprocess.run(["git", "--git-dir", repo, "ls-tree", "-r", "--name-only", tag, "python/packaging"], check=True, capture_output=True, text=True).stdout.split() if re.fullmatch(r"python/packaging/(bindings_wheel/)?tensorrt/__init__\.py", f)]
    assert len(inits) == 1, inits
    read_package_init(git_show(repo, tag, inits[0]), reader)
    return reader.table(version, f"github.com/NVIDIA/TensorRT@{tag} python/src + {inits[0]}"), reader


def unparsed_names(reader: SourceReader, table: dict) -> set[str]:
    """Literal .def/.value names in the sources that no class or module table received."""
    got = set(table["module"]) | set(table["aliases"])
    for members in table["classes"].values():
        got |= set(members)
    return set(filter(is_api, reader.seen_def_names)) - got


# ----------------------------------------------------------------------------------------
# Introspecting an importable wheel
# ----------------------------------------------------------------------------------------


def introspect(mod) -> Table:
    """Table of an imported pybind11 module (classes, enums via __members__, aliases)."""
    import types

    t = Table(str(mod.__version__), "")
    keys: dict[int, str] = {}  # id(type) -> table key (its __qualname__)

    def own_mro(cls: type) -> list[type]:
        return [k for k in cls.__mro__ if k is not object and k.__module__ != "pybind11_builtins"]

    def visit(key: str, cls: type) -> None:
        keys[id(cls)] = key
        own = own_mro(cls)
        names = set().union(*(vars(k) for k in own))
        is_enum = isinstance(getattr(cls, "__members__", None), dict)
        if is_enum:
            t.enums.add(key)
            names -= {"name", "value"}  # every pybind11 enum has them; the sources never list them
        t.properties[key], t.readonly[key] = set(), set()
        for n in sorted(names):
            raw = next(vars(k)[n] for k in own if n in vars(k))
            if isinstance(raw, property):
                t.properties[key].add(n)
                if raw.fset is None:
                    t.readonly[key].add(n)
            elif isinstance(raw, type) and id(raw) not in keys and raw.__qualname__ == f"{key}.{n}":
                visit(raw.__qualname__, raw)
        t.classes[key] = names

    for name in dir(mod):
        obj = getattr(mod, name)
        if isinstance(obj, type) and obj.__name__ == name:
            visit(name, obj)
    for name in dir(mod):
        obj = getattr(mod, name)
        if isinstance(obj, types.ModuleType) or (name.startswith("_") and name != "__version__") or name in t.classes:
            continue
        t.module.add(name)
        if isinstance(obj, type) and id(obj) in keys:
            t.aliases[name] = keys[id(obj)]
        elif keys.get(id(type(obj))) in t.enums:
            t.aliases[name] = f"{keys[id(type(obj))]}.{obj.name}"
    for key in list(t.classes):  # members bound to another class or an enum value
        if key in t.enums:
            continue
        cls = getattr(mod, key.split(".")[0])
        for part in key.split(".")[1:]:
            cls = getattr(cls, part)
        for n in t.classes[key]:
            raw = getattr(cls, n, None)
            if isinstance(raw, type) and id(raw) in keys and keys[id(raw)] != f"{key}.{n}":
                t.aliases[f"{key}.{n}"] = keys[id(raw)]
            elif keys.get(id(type(raw))) in t.enums and keys[id(type(raw))] != key:
                t.aliases[f"{key}.{n}"] = f"{keys[id(type(raw))]}.{raw.name}"
    return t


def read_wheels(wheels: list[Path]) -> Table:
    with tempfile.TemporaryDirectory() as tmp:
        top = []
        for w in wheels:
            with zipfile.ZipFile(w) as z:
                z.extractall(tmp)
                top += [n.split("/")[0] for n in z.namelist() if n.endswith("/__init__.py") and n.count("/") == 1]
        names = [n for n in top if n.endswith("_bindings")] or [n for n in top if not n.endswith("_libs")]
        assert len(names) == 1, f"cannot tell the bindings module among {top}"
        sys.path.insert(0, tmp)
        import importlib

        mod = importlib.import_module(names[0])
        t = introspect(mod)
        t.source = f"{', '.join(w.name for w in wheels)} (module {names[0]})"
        return t


# ----------------------------------------------------------------------------------------


def dumps(data: dict) -> str:
    """JSON with one line per top-level key and per class, so diffs between versions read well."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            inner = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
            lines.append(f"{json.dumps(key)}: {{\n" + ",\n".join(inner) + "\n }")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def write(label: str, t: Table, out: Path) -> dict:
    data = t.to_json()
    wrong = check_facts(label, data)
    if wrong:
        raise SystemExit("known facts contradicted:\n  " + "\n  ".join(wrong))
    path = out / f"{label}.json"
    path.write_text(dumps(data))
    n = sum(len(v) for v in data["classes"].values())
    print(f"{path.name}: version {t.version}, {len(data['classes'])} classes/enums, {n} members, {len(data['module'])} module names")
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sources", help="tables from NVIDIA/TensorRT's pybind11 sources at TAGS")
    s.add_argument("--repo", required=True, help="git dir of a NVIDIA/TensorRT clone with its tags")
    s.add_argument("--out", type=Path, default=OUT_DIR)
    w = sub.add_parser("wheel", help="table from an importable bindings wheel (+ its libs wheel)")
    w.add_argument("--label", required=True, help="e.g. rtx-1.7.1 or lean-11.4.0")
    w.add_argument("wheels", nargs="+", type=Path)
    w.add_argument("--out", type=Path, default=OUT_DIR)
    a = p.parse_args(argv)
    if a.cmd == "sources":
        for tag, label in TAGS.items():
            t, reader = read_tag(a.repo, tag)
            data = write(label, t, a.out)
            missed = unparsed_names(reader, data)
            if missed:
                print(f"  names in the sources not placed in a table: {sorted(missed)}")
    else:
        write(a.label, read_wheels(a.wheels), a.out)


if __name__ == "__main__":
    main()
