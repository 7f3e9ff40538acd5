"""The project's module import graph and its circles (run: ``python tests/import_graph.py [ROOT]``).

Every import statement counts, at the top of a module or inside a function, and so does every
string that names a project module (``"pkg.module"`` or ``"pkg.module:function"``), as importlib,
sandbox targets and the sandbox's preload list take them. tests/test_import_layers.py uses it.
"""

import ast, os, re, sys

PACKAGES = ("objectives", "inner_loop", "discovery", "evaluation")


def graph(root: str = ".") -> dict[str, set[str]]:
    """module -> the project modules it imports: every import statement (top level or inside a
    function) and every string naming a project module ("pkg.mod" or "pkg.mod:attr", as importlib,
    sandbox targets and preload lists take them)."""
    mods = {}
    for p in PACKAGES:
        for dp, _, fs in os.walk(os.path.join(root, p)):
            for f in fs:
                if f.endswith(".py"):
                    path = os.path.join(dp, f)
                    m = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    mods[m[:-9] if m.endswith(".__init__") else m] = path

    def target(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    strpat = re.compile(r"^((?:%s)(?:\.\w+)*)(?::[\w.]+)?$" % "|".join(PACKAGES))
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(open(path).read())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                names = subs + ([node.module] if len(subs) < len(node.names) else [])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and strpat.match(node.value):
                names = [strpat.match(node.value).group(1)]
            for n in names:
                t = target(n)
                if t and t != m:
                    edges[m].add(t)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    g = graph(sys.argv[1] if len(sys.argv) > 1 else ".")
    found = circles(g)
    print(f"modules {len(g)}, import edges {sum(map(len, g.values()))}, circles {len(found)}")
    for c in found:
        print("  circle:", ", ".join(c))
