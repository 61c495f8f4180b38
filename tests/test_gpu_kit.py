"""The GPU kit's list (benchmarks/gpu/kit_requirements.txt, docs/gpu.md) against what the package and
the ns-* entry points import: every distribution they load must be in the GPU image
(benchmarks/gpu/image_packages.txt, the clean room's environment before the kit) or in the kit, or the
next GPU run stops at an ImportError on a machine without network. No network, no training."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path
from typing import Dict, Iterable, Set


ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
COMPILED = {"gsplat"}
"""In the kit, compiled by benchmarks/gpu/build_gsplat.sh rather than downloaded."""
OPTIONAL = {
    "simplejson": "requests uses it instead of json when it is installed",
    "pysocks": "requests' SOCKS proxy support, imported when it is installed",
    "defusedxml": "Pillow's XMP reader, imported when it is installed",
    "six": "ppft (under nerfstudio's pathos) imports it when installed, else makes a stand-in",
}
"""Distributions the entry points load here (the test environment has them) only because they are
installed: the clean room (benchmarks/gpu/cleanroom.sh) runs without them."""
ENTRY_MODULES = ("nerfstudio.scripts.train", "nerfstudio.scripts.eval", "distilled_gs_ns.cli.main", "distilled_gs_ns.cli.stages")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> Dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def image_and_kit() -> Set[str]:
    return set(pinned(GPU / "image_packages.txt")) | set(pinned(GPU / "kit_requirements.txt")) | COMPILED


def distributions_of(modules: Iterable[str]) -> Dict[str, Set[str]]:
    """{canonical distribution: top-level modules} for the modules that come from an installed
    distribution (the standard library's and this package's come from none)."""
    by_module = packages_distributions()
    found: Dict[str, Set[str]] = {}
    for module in modules:
        for dist in by_module.get(module, []):
            found.setdefault(canonical(dist), set()).add(module)
    found.pop("distilled-gs-ns", None)
    return found


def test_the_kit_lists_each_wheel_once_and_no_wheel_of_the_image() -> None:
    kit, image = pinned(GPU / "kit_requirements.txt"), pinned(GPU / "image_packages.txt")
    lines = [line for line in (GPU / "kit_requirements.txt").read_text().splitlines() if "==" in line]
    assert len(lines) == len(kit), "a wheel listed twice"
    assert not set(kit) & set(image), "the image has these; install_kit.sh would replace the image's versions"
    assert {"torch", "numpy", "torchvision"} <= set(image)


def test_the_kit_pins_the_versions_the_package_is_tested_with() -> None:
    constraints = pinned(ROOT / "constraints.txt")
    kit = pinned(GPU / "kit_requirements.txt")
    for name in set(kit) & set(constraints):
        assert kit[name] == constraints[name], name
    assert f"gsplat=={constraints['gsplat']}" in (GPU / "build_gsplat.sh").read_text()


def test_every_dependency_of_the_package_is_in_the_image_or_the_kit() -> None:
    """pyproject.toml's dependencies, as the installed package declares them (setup_env.sh reinstalls
    it whenever pyproject.toml changes)."""
    dependencies = [d for d in requires("distilled-gs-ns") or [] if "extra ==" not in d]
    names = {canonical(re.match(r"[A-Za-z0-9._-]+", d).group(0)) for d in dependencies}
    assert {"nerfstudio", "gsplat", "numpy"} <= names
    assert names - image_and_kit() == set()


def test_every_module_the_package_imports_is_in_the_image_or_the_kit() -> None:
    """All imports in the package's source, at module level or inside functions."""
    modules = set()
    for path in (ROOT / "distilled_gs_ns").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"distilled_gs_ns", "__future__"}
    found = distributions_of(third_party)
    unknown = third_party - set().union(*found.values())
    assert unknown == set(), "imported but installed from no distribution here"
    assert set(found) - image_and_kit() == set()


def test_the_entry_points_load_only_the_image_and_the_kit() -> None:
    """nerfstudio's ns-train and ns-eval, `distilled-gs` and its stages, with every method registered,
    imported in a fresh interpreter: what they load (nerfstudio's own imports too) must be there."""
    script = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in ENTRY_MODULES)
        + "from nerfstudio.configs.method_configs import all_methods\n"
        + "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = distributions_of(json.loads(proc.stdout.splitlines()[-1]))
    assert {"nerfstudio", "gsplat", "torch", "viser"} <= set(loaded)
    missing = set(loaded) - image_and_kit() - set(OPTIONAL)
    assert missing == set(), {name: sorted(loaded[name]) for name in missing}
