"""The project's import graph, read from the source (every import, lazy ones included): it
has no cycle, lower layers never import higher ones (legacy_eager and airbench_tf < export <
bench: airbench_tf sits beside the seed's package, using its run machinery, and
legacy_eager.run builds its trainer), and no module imports a command-line module (only
tests do)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("legacy_eager", "airbench_tf", "export", "bench")
COMMAND_LINES = {"legacy_eager.train", "export.train_and_export", "export.repro", "export.serve",
                 "export.publish", "export.model_repository", "bench.__main__",
                 "bench.step_variants", "bench.grpc_clients",
                 "bench.peers.port_step", "bench.peers.torch_step", "bench.peers.infer",
                 "bench.peers.airbench94_torch"}
LAYER = {"legacy_eager": 0, "airbench_tf": 0, "export": 1, "bench": 2}


def _modules():
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py") and not name.endswith(("_pb2.py", "_pb2_grpc.py")):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[module.removesuffix(".__init__")] = path
    return found


def import_graph():
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = [f"{node.module}.{a.name}" for a in node.names
                              if f"{node.module}.{a.name}" in modules]
                # `from package import submodule` needs the submodule; `from module import
                # name` the module
                names = submodules if len(submodules) == len(node.names) else [node.module]
            else:
                continue
            targets |= {n for n in names if n in modules}
        # a package's __init__ is already being imported when its own submodules are
        ancestors = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
        graph[module] = targets - {module} - ancestors
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert len(graph) > 40 and cycles == []


def test_lower_layers_never_import_higher_ones_nor_a_command_line():
    bad = []
    for module, targets in import_graph().items():
        for target in targets:
            if LAYER[target.split(".")[0]] > LAYER[module.split(".")[0]]:
                bad.append(f"{module} imports {target} (a higher layer)")
            if target in COMMAND_LINES:
                bad.append(f"{module} imports the command line {target}")
    assert bad == []
