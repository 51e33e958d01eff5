"""The package's layering rules (issue #19), read from the import statements of every module:
subpackages import each other without cycles; only ros/ imports rclpy, ROS message packages and
instseg_ros.ros; the nodes never import the tools under ros/tools/."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "instseg_ros"
#: top-level modules that are ROS client libraries or message packages
ROS_MODULES = ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs", "diagnostic_msgs",
               "std_srvs", "lifecycle_msgs", "builtin_interfaces", "rosidl_runtime_py", "rosbag2_py", "tf2_ros",
               "launch", "launch_ros", "instseg_ros.msg")


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (relative imports resolved), at any depth of the file."""
    rel = path.relative_to(ROOT.parent).with_suffix("").parts
    package = rel[:-1]  # a module's package; for pkg/__init__.py the package itself
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def _subpackage(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


MODULES = sorted(ROOT.rglob("*.py"))


def _graph() -> dict[str, set[str]]:
    g = defaultdict(set)
    for p in MODULES:
        src = _subpackage(p)
        for name in _imports(p):
            parts = name.split(".")
            if parts[0] == "instseg_ros" and len(parts) > 1 and parts[1] not in (src, "msg"):
                if (ROOT / parts[1]).is_dir() or (ROOT / f"{parts[1]}.py").is_file():
                    g[src].add(parts[1])
    return g


def test_the_rules_see_the_package():
    g = _graph()
    assert len(MODULES) > 50 and {"core", "ros", "clusternet", "occuseg", "mapping"} <= set(g) | {"core"}
    assert "core" in g["clusternet"] and "clusternet" in g["ros"]  # edges the code is known to have


def test_no_import_cycles_between_subpackages():
    g = _graph()
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(g.get(n, ())):
            assert state.get(m) != 1, "import cycle: " + " -> ".join(path + [n, m])
            if m not in state:
                visit(m, path + [n])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [])


@pytest.mark.parametrize("path", [p for p in MODULES if _subpackage(p) not in ("ros", "cli")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_ros_imports_ros(path):
    bad = sorted(n for n in _imports(path)
                 if n == "instseg_ros.ros" or n.startswith("instseg_ros.ros.")
                 or any(n == m or n.startswith(m + ".") for m in ROS_MODULES))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_nodes_do_not_import_the_tools():
    for p in (ROOT / "ros").glob("*.py"):
        bad = sorted(n for n in _imports(p) if n.startswith("instseg_ros.ros.tools"))
        assert not bad, f"{p.name} imports {bad}"
