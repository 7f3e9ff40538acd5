"""Static screening of candidate loss code (AST), before anything runs.

The screen is a fast filter that turns the common mistakes and the obvious escapes of LLM-written
code into precise, line-numbered errors the proposer can learn from. It is defence in depth, **not
the security boundary**: Python offers too many ways from one object to another for a deny-list of
names to be complete, and everything after it is built to hold when it is bypassed. The boundary is
the separate, unprivileged, network-less process of :mod:`objectives.sandbox` (see its threat
model); the trainer calls a loss on detached copies of its inputs, so even unscreened code cannot
reach the model (:mod:`inner_loop.trainer`). What the screen refuses:

* imports outside the allow-list (torch, torch.nn.functional, math);
* any attribute or name starting with an underscore (dunders, ``torch._C``), frame / code /
  generator attributes (``gi_frame``, ``f_back``, ``f_globals``), ``str.format`` attribute walks,
  and the torch entry points that reach the file system, native code or ``os``;
* attribute chains through modules: any attribute named like a standard-library module
  (``torch.inspect``, ``.shutil``, ``.posix``, ``.enum``, ``.operator``: torch re-exports many, and
  from them ``os``, builtins and ``__import__`` are a few plain names away) or like one of torch's
  own submodules other than ``nn``, ``functional``, ``fft``, ``linalg`` and ``special``
  (``torch.profiler``, ``torch.autograd``, ``torch.testing``, ...);
* the autograd graph and raw storage: ``.data``, ``.grad``, ``.grad_fn``, ``.next_functions``,
  ``.variable``, ``.backward``, hooks, storages (a loss could otherwise walk from its inputs to the
  model's parameters and edit them);
* the builtins that evaluate, import or reflect (exec, eval, compile, open, __import__, globals,
  getattr, type, ...);
* anything at top level other than imports, a docstring, constant assignments (``EPS = 0.1``,
  ``TAU = -1 / 20``, ``NAME = "text"``: one name, a number or string, unary minus and + - * / of
  numbers, nothing that calls anything; see :func:`_check_constant`) and exactly one function;
  decorators, non-constant default arguments, classes, generators, async code, global/nonlocal.
"""

from __future__ import annotations

import ast
import dataclasses
import sys

from objectives.base import ObjectiveError

ALLOWED_IMPORTS = frozenset({"torch", "torch.nn.functional", "math"})
# `from torch.nn import functional` and `from torch import nn` are how people spell the same modules.
ALLOWED_FROM = {"torch.nn": {"functional"}, "torch": {"nn"}}

FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars", "getattr",
    "setattr", "delattr", "hasattr", "type", "object", "super", "breakpoint", "input", "help",
    "exit", "quit", "memoryview", "classmethod", "staticmethod", "property", "dir", "id",
    "__builtins__", "__loader__", "__spec__", "os", "sys", "subprocess", "ctypes", "importlib",
    "builtins", "socket", "shutil", "pathlib", "signal", "resource", "threading", "multiprocessing",
})

FORBIDDEN_ATTRS = frozenset({
    # modules that torch re-exports, and torch's gates to files, pickles and native code
    "os", "sys", "ctypes", "subprocess", "builtins", "importlib", "load", "save", "ops", "hub",
    "library", "classes", "utils", "jit", "compile", "fx", "export", "backends", "distributed",
    "multiprocessing", "cuda", "mps", "package", "overrides", "serialization", "storage",
    "from_file", "set_default_dtype", "set_default_device", "set_num_threads", "manual_seed",
    "seed", "set_rng_state", "register_hook", "register_forward_hook", "format", "format_map",
    "mro", "tofile", "numpy",
    # the autograd graph (reaches the model's parameters from a loss's inputs) and raw storage
    "data", "grad", "grad_fn", "next_functions", "variable", "saved_tensors", "metadata", "backward",
    "register_prehook", "register_post_accumulate_grad_hook", "retain_grad", "untyped_storage",
    "set_", "share_memory_", "detach_", "requires_grad_", "parameters", "named_parameters",
    "buffers", "state_dict", "load_state_dict", "modules", "bltns", "attrgetter", "methodcaller",
    # torch's submodules other than the maths a loss needs (read off torch 2.13's namespace)
    "accelerator", "amp", "ao", "autograd", "compiler", "cpp", "cpu", "distributions", "func",
    "futures", "masked", "monitor", "mtia", "nested", "optim", "profiler", "quantization",
    "quasirandom", "random", "return_types", "sparse", "testing", "torch_version", "version",
    "windows", "xpu", "np", "init", "parallel", "parameter", "intrinsic", "qat", "quantizable",
    "quantized", "attention", "common_types",
})
# Attribute names that are standard-library modules: torch re-exports many of them (torch.inspect,
# torch.os, F.importlib), and each is a few plain attribute steps from os, builtins or __import__.
# A few are also tensor methods or the allowed math module; those stay usable.
STDLIB_MODULE_ATTRS = frozenset(
    name for name in getattr(sys, "stdlib_module_names", ()) if not name.startswith("_")
) - {"math", "chunk", "select", "trace"}
FRAME_PREFIXES = ("gi_", "f_", "co_", "tb_", "cr_", "ag_")


@dataclasses.dataclass(frozen=True)
class Screened:
    """What the screen learned about an accepted candidate."""

    function_name: str
    params: tuple[str, ...]
    line: int


def _refuse(node: ast.AST | None, reason: str):
    raise ObjectiveError(reason, getattr(node, "lineno", None))


CONSTANT_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
MAX_CONSTANT_NODES = 40  # a constant expression is small: nothing to compute at load time
MAX_CONSTANT_EXPONENT = 64
SHADOWED = frozenset({"torch", "F", "math"})  # the names the loss's namespace provides


def _check_constant(node: ast.AST) -> None:
    """Accept ``NAME = <constant>`` at top level: a number or a string, or numbers combined with
    unary +/-, + - * / and ``**`` of two literal numbers (exponent up to 64); refuse anything else."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
        target = "several targets" if isinstance(node, ast.Assign) and len(node.targets) > 1 else "not a name"
        _refuse(node, f"a top-level assignment must bind one name to a constant ({target})")
    name = node.targets[0].id
    if name in SHADOWED:
        _refuse(node, f"a top-level constant may not be named {name!r} (the loss uses that name)")
    value = node.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return
    if sum(1 for _ in ast.walk(value)) > MAX_CONSTANT_NODES:
        _refuse(node, f"the top-level constant {name} is too long an expression")
    if not _numeric(value):
        _refuse(node, f"the top-level constant {name} must be a number, a string or simple arithmetic of "
                      "numbers (+ - * / and unary minus), with no names or calls")


def _numeric(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _numeric(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, CONSTANT_OPS):
        return _numeric(node.left) and _numeric(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):  # 10 ** -3, 2 ** 0.5
        base, exp = node.left, node.right
        if isinstance(exp, ast.UnaryOp) and isinstance(exp.op, ast.USub):
            exp = exp.operand
        return (all(isinstance(n, ast.Constant) and type(n.value) in (int, float) for n in (base, exp))
                and abs(exp.value) <= MAX_CONSTANT_EXPONENT)
    return False


def _check_import(node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name not in ALLOWED_IMPORTS:
                _refuse(node, f"import of {alias.name!r} is not allowed (allowed: torch, "
                              "torch.nn.functional, math)")
        return
    module = node.module or ""
    if node.level:
        _refuse(node, "relative imports are not allowed")
    for alias in node.names:
        full = f"{module}.{alias.name}"
        if full not in ALLOWED_IMPORTS and alias.name not in ALLOWED_FROM.get(module, ()):
            if not (module in ALLOWED_IMPORTS and module != "torch"):
                _refuse(node, f"'from {module} import {alias.name}' is not allowed (allowed: torch, "
                              "torch.nn.functional, math)")
            if (alias.name.startswith("_") or alias.name in FORBIDDEN_ATTRS or alias.name == "*"
                    or alias.name in STDLIB_MODULE_ATTRS):
                _refuse(node, f"'from {module} import {alias.name}' is not allowed")


class _Visitor(ast.NodeVisitor):
    def visit_Import(self, node):
        _check_import(node)

    def visit_ImportFrom(self, node):
        _check_import(node)

    def visit_Attribute(self, node):
        attr = node.attr
        if attr.startswith("_"):
            _refuse(node, f"access to the underscore attribute {attr!r} is not allowed")
        if attr.startswith(FRAME_PREFIXES):
            _refuse(node, f"access to the frame/code attribute {attr!r} is not allowed")
        if attr in FORBIDDEN_ATTRS:
            _refuse(node, f"access to .{attr} is not allowed in a loss function")
        if attr in STDLIB_MODULE_ATTRS:
            _refuse(node, f"access to .{attr} (a module) is not allowed in a loss function")
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in FORBIDDEN_NAMES:
            _refuse(node, f"use of {node.id!r} is not allowed")
        if node.id.startswith("__"):
            _refuse(node, f"use of the dunder name {node.id!r} is not allowed")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str) and "__" in node.value:
            _refuse(node, "string constants containing '__' are not allowed")

    def visit_FunctionDef(self, node):
        if node.decorator_list:
            _refuse(node, "decorators are not allowed")
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            if not isinstance(default, ast.Constant):
                _refuse(default, "default arguments must be constants")
        self.generic_visit(node)

    def generic_visit(self, node):
        what = REFUSED_NODES.get(type(node))
        if what:
            _refuse(node, f"{what} are not allowed in a loss function")
        super().generic_visit(node)


REFUSED_NODES = {
    ast.ClassDef: "class definitions", ast.AsyncFunctionDef: "async functions",
    ast.Await: "await expressions", ast.Yield: "generators (yield)",
    ast.YieldFrom: "generators (yield from)", ast.Global: "global statements",
    ast.Nonlocal: "nonlocal statements", ast.GeneratorExp: "generator expressions",
    ast.AsyncFor: "async loops", ast.AsyncWith: "async with blocks",
}


def screen(source: str) -> Screened:
    """Parse and screen ``source``; return the one function's name and parameters, or raise."""
    if not isinstance(source, str) or not source.strip():
        raise ObjectiveError("no code given")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ObjectiveError(f"syntax error: {err.msg}", err.lineno) from None
    functions = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions.append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
                node.value.value, str):
            continue  # a docstring or a stray string
        elif isinstance(node, ast.Assign):
            _check_constant(node)
        else:
            _refuse(node, f"only imports and one function may appear at top level, found "
                          f"{type(node).__name__}")
    if not functions:
        raise ObjectiveError("no function definition found: expected exactly one top-level function")
    if len(functions) > 1:
        names = ", ".join(f.name for f in functions)
        _refuse(functions[1], f"expected exactly one top-level function, found {len(functions)} ({names})")
    _Visitor().visit(tree)
    fn = functions[0]
    if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs or fn.args.posonlyargs:
        _refuse(fn, "the loss must take plain positional parameters (no *args, **kwargs, keyword-only)")
    params = tuple(a.arg for a in fn.args.args)
    return Screened(function_name=fn.name, params=params, line=fn.lineno)
