"""The package layout: rtp2ws's import graph, read from the source with ``ast``
(function-level imports included), has no circles, and no module imports one
in a higher layer.

Layers, bottom to top (a module may import its own layer and the ones below):

    speedups, argtypes, tomlconfig, the C extensions, the package itself
    codec
    net, capture
    signalling, media
    fastpath
    pipeline
    sinks, ws, broker
    run
    bench, sinkserver        (programs of their own, next to cli)
    cli
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import paths

ROOT = paths.ROOT / "rtp2ws"

LAYERS: list[tuple[str, ...]] = [
    ("__init__", "speedups", "argtypes", "tomlconfig", "_native", "_fastpath", "_wsframe"),
    ("codec",),
    ("net", "capture"),
    ("signalling", "media"),
    ("fastpath",),
    ("pipeline",),
    ("sinks", "ws", "broker"),
    ("run",),
    ("bench", "sinkserver"),
    ("cli",),
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}

# Imports that break a rule and are excused while a branch removes them: (importer,
# imported) -> why.  ``test_no_circles`` and ``test_nothing_imports_upward`` pass over
# them; ``test_known_violations_still_break_a_rule`` fails once one no longer does (its
# branch merged), until the entry is deleted here.
KNOWN: dict[tuple[str, str], str] = {
    ("rtp2ws.ws.hookstream", "rtp2ws.ws.sender"):
        "for types only (TYPE_CHECKING): a HookStream is one of the Sender's streams, as sender.Stream is, made "
        "by it and sharing its state (its lock, totals, config, connection set-up)",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    for ext in ("_native", "_fastpath", "_wsframe"):      # the C extensions (native/*.c)
        mods[f"rtp2ws.{ext}"] = ROOT / f"{ext}.pyi"
    return mods


MODULES = _modules()


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str) -> set[str]:
    """The rtp2ws modules ``name`` imports, anywhere in its code."""
    path = MODULES[name]
    if path.suffix == ".pyi":
        return set()
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # "from pkg import mod" names a module; "from mod import name" a name in it
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:     # "import rtp2ws.x.y" of a package path
                target = target.rpartition(".")[0]
            if target.startswith("rtp2ws") and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    parts = name.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def _upward() -> set[tuple[str, str]]:
    return {(a, b) for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [name for name in MODULES if name.split(".")[1:2] and name.split(".")[1] not in LAYER] == []


def test_graph_is_read():
    # the graph sees module-level, function-level and relative imports
    assert "rtp2ws.pipeline.pipeline" in GRAPH["rtp2ws.cli"]
    assert "rtp2ws.sinkserver.server" in GRAPH["rtp2ws.cli"]          # inside cmd_sink
    assert "rtp2ws.codec.g711" in GRAPH["rtp2ws.fastpath.twin"]
    assert "rtp2ws.run.gcpolicy" in GRAPH["rtp2ws.run.live"]             # "from . import gcpolicy"
    assert "rtp2ws" in GRAPH["rtp2ws.cli"]                                # "from . import __version__"


def test_circle_finder_finds_circles():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_circles():
    graph = {a: {b for b in deps if (a, b) not in KNOWN} for a, deps in GRAPH.items()}
    assert _circles(graph) == []


def test_nothing_imports_upward():
    assert sorted(_upward() - set(KNOWN)) == []


def test_cli_is_imported_by_nothing():
    assert sorted(a for a, deps in GRAPH.items() if "rtp2ws.cli" in deps) == []


def _breaks_a_rule(edge: tuple[str, str], graph: dict[str, set[str]]) -> bool:
    """Does ``a`` still import ``b``, and does that import go up a layer or close a circle?"""
    a, b = edge
    return b in graph.get(a, ()) and (_layer(b) > _layer(a) or any(a in c and b in c for c in _circles(graph)))


def test_known_violations_still_break_a_rule():
    assert [edge for edge in KNOWN if not _breaks_a_rule(edge, GRAPH)] == []


def test_breaks_a_rule_tells_excused_imports_from_fixed_ones():
    low, high, peer = "rtp2ws.codec.g711", "rtp2ws.pipeline.pipeline", "rtp2ws.codec.resample"
    assert _breaks_a_rule((low, high), {low: {high}, high: set()})                     # up a layer
    assert _breaks_a_rule((low, peer), {low: {peer}, peer: {low}})                     # a circle in one layer
    assert not _breaks_a_rule((high, low), {high: {low}, low: set()})                  # down: allowed
    assert not _breaks_a_rule((low, peer), {low: {peer}, peer: set()})                 # same layer, no circle
    assert not _breaks_a_rule((low, high), {low: set(), high: set()})                  # the import is gone


def test_fuzz_link_types_are_the_one_tables_in_the_seeds_order():
    """fuzz/gen.py's LINKTYPES are the keys of net.packet.LINK_TYPES, the one link table;
    the committed seeds pick one by its index (fuzz/corpus/packet, the pipeline target's
    raw mode), so the order they were made with stays, and new link types come after."""
    spec = importlib.util.spec_from_file_location("fuzz_gen", paths.ROOT / "fuzz" / "gen.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    from rtp2ws.net.packet import LINK_TYPES

    assert sorted(gen.LINKTYPES) == sorted(LINK_TYPES) and len(set(gen.LINKTYPES)) == len(gen.LINKTYPES)
    assert gen.LINKTYPES[:10] == [1, 113, 276, 12, 14, 101, 228, 229, 0, 108]


# -- the tests mirror the package (tests/README.md) -----------------------------------------

STAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
NOT_STAGES = {"system": "more than one stage, or the command or the repository as a whole",
              "data": "captures and parser vectors", "tools": "the scripts that made them"}
# Test files in a stage's folder named for a topic of a module that has a test file already.
ALLOWED: dict[str, str] = {
    "codec/test_rates.py": "codec.resample's output rates: the 3x and 6x interpolators, 8 kHz as decoded",
    "bench/test_live_capacity.py": "bench: its captures and discard sink under rtp2ws live, benchmarks/live_capacity.py",
    "media/test_leg_jitter.py": "media.leg's interarrival jitter: by hand, on both paths, against tshark",
    "media/test_leg_codecs.py": "media.leg with G.722, G.729 and Opus, and codec changes on one timeline",
    "pipeline/test_flows.py": "pipeline.pipeline: one timeline per leg when a second RTP flow matches it",
    "sinkserver/test_sink_robustness.py": "sinkserver.session and .server against hostile clients",
}
PACKAGE = {str(p.relative_to(ROOT).with_suffix("")) for p in ROOT.rglob("*.py") if p.name != "__init__.py"}


def _misplaced(files: list[str], package: set[str], stages: list[str]) -> list[str]:
    """The test files among ``files`` (paths under tests/) that break the mirror rule:
    tests/test_<module>.py for rtp2ws/<module>.py; tests/<stage>/test_<module>.py for
    rtp2ws/<stage>/<module>.py, or test_<stage>.py for the stage as a whole, or a file in
    ALLOWED; anything in tests/system/.  ``package``: rtp2ws's modules, "media/leg"."""
    out = []
    for rel in files:
        *folders, name = rel.split("/")
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        module = name[len("test_"):-len(".py")]
        if folders == []:
            ok = module in package
        elif folders == ["system"]:
            ok = True
        elif len(folders) == 1 and folders[0] in stages:
            ok = f"{folders[0]}/{module}" in package or module == folders[0] or rel in ALLOWED
        else:
            ok = False
        if not ok:
            out.append(rel)
    return out


def _test_files() -> list[str]:
    return sorted(str(p.relative_to(paths.TESTS)) for p in paths.TESTS.rglob("test_*.py"))


def test_every_test_file_mirrors_a_module():
    assert _misplaced(_test_files(), PACKAGE, STAGES) == []


def test_every_folder_of_tests_is_a_stage():
    folders = [p.name for p in paths.TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert sorted(set(folders) - set(STAGES) - set(NOT_STAGES)) == []
    assert sorted(set(ALLOWED) - set(_test_files())) == []             # the allowance names files that exist


def test_the_mirror_rule_finds_misplaced_files():
    package = {"cli", "media/leg", "media/rtp"}
    good = ["test_cli.py", "media/test_leg.py", "media/test_media.py", "system/test_anything.py",
            "pipeline/test_flows.py", "callgen.py", "media/conftest.py"]
    bad = ["test_leg.py", "media/test_cli.py", "media/test_jitter.py", "nostage/test_leg.py",
           "media/deeper/test_leg.py", "data/test_x.py", "tools/test_x.py", "system/deeper/test_x.py"]
    assert _misplaced(good + bad, package, ["media", "pipeline"]) == bad


def _test_imports(source: str) -> list[str]:
    """Modules named test_* (or conftest) that ``source`` imports, at any depth, and in
    scripts it carries as strings (run with ``python -c``)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            try:
                out += _test_imports(node.value)
            except SyntaxError:                     # prose, not a script
                pass
            continue
        else:
            continue
        out += [n for n in names if any(p.startswith("test_") or p == "conftest" for p in n.split("."))]
    return out


def test_no_test_file_imports_another():
    """Shared code lives in the helper modules of tests/ (tests/README.md), so that a test file
    can move, and pytest imports each test file once, by its path."""
    found = {}
    for path in sorted(paths.TESTS.rglob("*.py")):
        rel = str(path.relative_to(paths.TESTS))
        if not rel.startswith("data/") and (names := _test_imports(path.read_text(encoding="utf-8"))):
            found[rel] = names
    assert found == {}


def test_test_imports_are_found():
    # "tst_" and "cnftest" here, so that this file itself imports neither in a string
    source = '''
import os, tst_calls
from callgen import sdp
from tests.run.tst_live import PhoneCall

def f():
    from cnftest import can_capture

SCRIPT = r"""
import sys
from tst_websocket import SinkProcess
"""
DOC = "a sentence to import, not a script"
'''.replace("tst_", "test_").replace("cnftest", "conftest")
    assert _test_imports(source) == ["test_calls", "tests.run.test_live", "conftest", "test_websocket"]
