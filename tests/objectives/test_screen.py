"""The static screen refuses with the line and the reason."""

import pytest

from objectives import ObjectiveError
from objectives.screen import screen

REFUSALS = [
    ("import os\ndef f(rho, beta):\n    return rho\n", 1, "import of 'os'"),
    ("def f(rho, beta):\n    x = ().__class__\n    return rho\n", 2, "underscore attribute '__class__'"),
    ("def f(rho, beta):\n    return eval('rho')\n", 2, "'eval'"),
    ("def f(rho, beta):\n    return __import__('os')\n", 2, "'__import__'"),
    ("def f(rho, beta):\n    open('/tmp/x', 'w')\n    return rho\n", 2, "'open'"),
    ("def f(rho, beta):\n    return torch.os.system('id')\n", 2, ".os"),
    ("def f(rho, beta):\n    g = (x for x in [])\n    return g.gi_frame\n", 2, "generator expressions"),
    ("def f(rho, beta):\n    return '{0.relu}'.format(F)\n", 2, ".format"),
    ("def f(rho, beta):\n    return globals()\n", 2, "'globals'"),
    ("def f(rho, beta):\n    return torch.load('x')\n", 2, ".load"),
    ("for i in []:\n    pass\ndef f(rho, beta):\n    return rho\n", 1, "only imports and one function"),
    ("x = print(1)\ndef f(rho, beta):\n    return rho\n", 1, "must be a number, a string or simple"),
    ("x = EPS = 1\ndef f(rho, beta):\n    return rho\n", 1, "bind one name to a constant"),
    ("X = 10 ** 10 ** 10\ndef f(rho, beta):\n    return rho\n", 1, "must be a number"),
    ("X = 'a' * 9\ndef f(rho, beta):\n    return rho\n", 1, "must be a number"),
    ("F = 0.5\ndef f(rho, beta):\n    return rho\n", 1, "may not be named 'F'"),
    ("def f(rho, beta):\n    return rho\ndef g(rho, beta):\n    return rho\n", 3, "exactly one top-level function"),
    ("@staticmethod\ndef f(rho, beta):\n    return rho\n", 2, "decorators"),
    ("def f(rho, beta=print('hi')):\n    return rho\n", 1, "default arguments must be constants"),
    ("def f(rho, beta):\n    class A: pass\n    return rho\n", 2, "class definitions"),
    ("def f(rho, beta:\n    return rho\n", 1, "syntax error"),
    ("import torch\n", None, "no function definition"),
    ("def f(rho, beta):\n    return getattr(torch, 'o' + 's')\n", 2, "'getattr'"),
    ("from torch import _C\ndef f(rho, beta):\n    return rho\n", 1, "not allowed"),
]


@pytest.mark.parametrize("source,line,reason", REFUSALS)
def test_refusal_names_line_and_reason(source, line, reason):
    with pytest.raises(ObjectiveError) as err:
        screen(source)
    assert err.value.line == line
    assert reason in err.value.reason


@pytest.mark.parametrize("source", [
    "import torch\nimport torch.nn.functional as F\nimport math\ndef f(rho, beta):\n    return F.softplus(-beta * rho) * math.pi\n",
    "from torch.nn import functional as F\ndef f(rho, beta):\n    return F.relu(rho)\n",
    '"""A docstring."""\ndef f(rho, beta):\n    def inner(x):\n        return x * 2\n    return inner(rho)\n',
    "EPS = 0.1\nTAU = -1 / 20\nK = (1 + 2) * 3 - 4 / 5\nP = 10 ** -3\nNAME = 'smooth'\n"
    "def f(rho, beta):\n    return rho * EPS\n",
])
def test_honest_code_passes(source):
    assert screen(source).function_name == "f"


# Escapes found by a security review that use no underscore at all: each reaches os, builtins or
# __import__ through modules torch re-exports, or the model's parameters through the autograd graph.
BYPASSES = [
    ("torch.profiler.profiler.shutil.posix.system('id')", ".posix"),
    ("torch.profiler", ".profiler"),
    ("torch.inspect.enum.bltns", ".bltns"),
    ("torch.inspect.enum", ".enum"),
    ("torch.inspect", ".inspect"),
    ("torch.inspect.attrgetter('_' + '_import_' + '_')", ".attrgetter"),
    ("F.importlib.import_module('os')", ".importlib"),
    ("torch.testing", ".testing"),
    ("torch.autograd.functional", ".autograd"),
    ("rho.grad_fn.next_functions[0][0].variable", ".variable"),
    ("rho.grad_fn.next_functions", ".next_functions"),
    ("rho.grad_fn", ".grad_fn"),
    ("rho.data", ".data"),
    ("rho.backward()", ".backward"),
    ("torch.functools.reduce", ".functools"),
    ("torch.random.get_rng_state", ".random"),
]


@pytest.mark.parametrize("expr,reason", BYPASSES)
def test_underscore_free_bypasses_are_refused(expr, reason):
    with pytest.raises(ObjectiveError) as err:
        screen(f"import torch\nimport torch.nn.functional as F\ndef f(rho, beta):\n    x = {expr}\n    return rho\n")
    assert err.value.line == 4
    assert reason in err.value.reason


def test_module_import_through_functional_is_refused():
    with pytest.raises(ObjectiveError, match="importlib"):
        screen("from torch.nn.functional import importlib\ndef f(rho, beta):\n    return rho\n")


@pytest.mark.parametrize("body", [
    "torch.chunk(rho, 2)[0] + rho.select(0, 0) * 0 + torch.trace(torch.eye(2)) * 0",
    "torch.special.expit(rho) + torch.linalg.norm(rho) * 0 + math.sqrt(2.0)",
    "F.logsigmoid(beta * rho) * rho.detach().sign()",
])
def test_tensor_methods_named_like_modules_still_pass(body):
    assert screen(f"import torch\nimport torch.nn.functional as F\nimport math\ndef f(rho, beta):\n"
                  f"    return {body}\n").function_name == "f"
