"""The switch engine (plugins/module_utils, but for the Ansible-side args.py and kube.py) is plain
Python: standard library and its own modules only, no import circle, no import hidden inside a
function, so the gateway runs it in a stock Python image and the modules run it under Ansible."""
import ast
import os
import sys

import pytest

from tests.quality.helpers import ROOT

BASE = os.path.join(ROOT, "plugins", "module_utils")
PREFIX = "ansible_collections.homelab.gpu.plugins.module_utils"
ANSIBLE_SIDE = {"args", "kube"}        # argument spec and the kubernetes-client transport of the modules
MODULES = sorted(f[:-3] for f in os.listdir(BASE) if f.endswith(".py") and f != "__init__.py")
ENGINE = [m for m in MODULES if m not in ANSIBLE_SIDE]


def parse(module):
    with open(os.path.join(BASE, module + ".py")) as handle:
        return ast.parse(handle.read(), module)


def imports(tree):
    """(top-level module name, own module_utils names, the node) for every import in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom) and node.module:
            own = []
            if node.module == PREFIX:
                own = [a.name for a in node.names]
            elif node.module.startswith(PREFIX + "."):
                own = [node.module[len(PREFIX) + 1:]]
            yield node.module, own, node


def graph():
    return dict((m, sorted(set(o for _n, own, _node in imports(parse(m)) for o in own))) for m in MODULES)


def test_the_engine_imports_only_the_standard_library_and_itself():
    for module in ENGINE:
        foreign = sorted(set(name for name, own, _node in imports(parse(module))
                             if not own and name != "__future__" and name.split(".")[0] not in sys.stdlib_module_names))
        assert not foreign, "plugins/module_utils/%s.py imports %s: the engine runs without Ansible and without " \
                            "third-party packages" % (module, ", ".join(foreign))


def test_no_import_circle_between_module_utils():
    edges = graph()
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in edges.get(node, []):
            assert state.get(dep) != "open", "import circle: %s" % " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])


# The one import put off until it is needed: the Ansible-side transport loads the kubernetes client
# (and kubernetes.core's helpers over it) only for a connection the standard-library path cannot
# serve, so a switch with a plain kubeconfig does not pay for the import (benchmarks/README.md,
# "The fixed cost around a switch"). Nothing else, and nothing in the engine, may import late.
LATE_IMPORTS = {("kube", "load_client"): {"urllib3", "kubernetes.client",
                                          "ansible_collections.kubernetes.core.plugins.module_utils.k8s"}}


def _imported(node):
    return [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]


@pytest.mark.parametrize("module", MODULES)
def test_imports_are_at_module_level(module):
    tree = parse(module)
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            allowed = LATE_IMPORTS.get((module, func.name), set())
            inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))
                     and not set(_imported(n)) <= allowed]
            assert not inner, "plugins/module_utils/%s.py imports inside %s() (line %d)" % (
                module, func.name, inner[0].lineno)


def test_public_engine_functions_have_type_hints():
    """Type hints (annotations or a ``# type:`` comment) on the public functions of the stages."""
    stages = ["options", "catalog", "plan", "preflight", "lease", "record", "apply", "rollout", "verify", "rollback",
              "client_config", "run", "info", "api", "transport"]
    missing = []
    for module in stages:
        with open(os.path.join(BASE, module + ".py")) as handle:
            source = handle.read()
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                annotated = node.returns is not None or any(a.annotation for a in node.args.args)
                body_start = node.body[0].lineno - 1
                commented = any("# type:" in line for line in lines[node.lineno - 1:body_start + 1])
                if not (annotated or commented):
                    missing.append("%s.%s" % (module, node.name))
    assert not missing, "public engine functions without type hints: %s" % ", ".join(missing)
