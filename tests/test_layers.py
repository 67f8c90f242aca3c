"""The package's imports go one way: scripts -> package -> lower layers (read from the source, not run)."""

import ast
import os

from conftest import REPO_ROOT

PACKAGE = "ernie_m_xnli"
# Lowest first: a module may import from its own layer, a lower one, and the top-level utils.
LAYERS = ("setup", "data", "models", "evaluation", "training")
TOP_LEVEL_HELPERS = {"utils"}
SCRIPTS = {"run_classifier", "sanity_check", "aggregate", "benchmark", "infer_static"}


def package_modules(root):
    """{dotted module name: file path} of every module under `root`/ernie_m_xnli."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(root, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    return modules


def imported_modules(path, known):
    """The names `path` imports (at any depth of the file), each resolved to the longest known module."""
    names = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package.layer import module` imports the module, `from package.module import name` the module
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    resolved = set()
    for name in names:
        parts = name.split(".")
        candidates = [".".join(parts[:end]) for end in range(len(parts), 0, -1)]
        resolved.add(next((candidate for candidate in candidates if candidate in known), parts[0]))
    return resolved


def layer_of(module):
    """The layer (the sub-package) of a dotted module name of the package; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def import_graph(root):
    modules = package_modules(root)
    return modules, {module: imported_modules(path, modules) for module, path in modules.items()}


def layering_problems(root):
    """One line per import that goes up a layer or out to a script, naming both files."""
    modules, graph = import_graph(root)
    problems = []
    for module, imports in sorted(graph.items()):
        for target in sorted(imports):
            if target in SCRIPTS:
                problems.append(f"{modules[module]} imports the script {target}.py")
            elif target in modules and layer_of(module) and layer_of(target):
                if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module)):
                    problems.append(
                        f"{modules[module]} ({layer_of(module)}) imports {modules[target]} ({layer_of(target)}), "
                        "a higher layer"
                    )
    return problems


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            return visiting[visiting.index(module) :] + [module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            if target in graph and (cycle := visit(target)):
                return cycle
        visiting.pop()
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), None)


def test_every_module_of_the_package_sits_in_a_known_layer():
    modules, _ = import_graph(REPO_ROOT)
    outside = [module for module in modules if module != PACKAGE and layer_of(module) not in LAYERS]
    assert outside == []
    assert {layer_of(module) for module in modules} - {None} == set(LAYERS)


def test_no_module_imports_a_higher_layer_or_a_script():
    assert layering_problems(REPO_ROOT) == []


def test_the_package_has_no_import_cycle():
    _, graph = import_graph(REPO_ROOT)
    assert find_cycle(graph) is None


def test_the_top_level_helpers_import_nothing_of_the_package():
    for helper in TOP_LEVEL_HELPERS:
        path = os.path.join(REPO_ROOT, f"{helper}.py")
        assert not any(name.startswith(PACKAGE) for name in imported_modules(path, {})), helper


def test_an_upward_import_is_reported_naming_both_files(tmp_path):
    for layer in LAYERS:
        (tmp_path / PACKAGE / layer).mkdir(parents=True)
        (tmp_path / PACKAGE / layer / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "training" / "trainer.py").write_text("import numpy\n")
    (tmp_path / PACKAGE / "data" / "batching.py").write_text("from ernie_m_xnli.training.trainer import Trainer\n")
    (tmp_path / PACKAGE / "data" / "encoding.py").write_text("def f():\n    import run_classifier\n")
    data = os.path.join(str(tmp_path), PACKAGE, "data")
    assert layering_problems(str(tmp_path)) == [
        f"{data}/batching.py (data) imports {tmp_path}/{PACKAGE}/training/trainer.py (training), a higher layer",
        f"{data}/encoding.py imports the script run_classifier.py",
    ]


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
