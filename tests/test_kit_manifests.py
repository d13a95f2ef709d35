"""Kit packaging checks that need no Kit: import hygiene, manifests, versions, settings, Kit tests not collected."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
EXTS = {"krabby.hal": REPO / "exts" / "krabby.hal", "krabby.parkour": REPO / "exts" / "krabby.parkour"}
FORBIDDEN = ("omni", "carb", "pxr", "isaacsim", "isaaclab", "isaaclab_tasks")


def _manifest(name: str) -> dict:
    with open(EXTS[name] / "config" / "extension.toml", "rb") as f:
        return tomllib.load(f)


def _pure_modules() -> list[str]:
    """Every krabby.* module outside the kit/ subpackages."""
    mods = []
    for root in EXTS.values():
        for py in sorted((root / "krabby").rglob("*.py")):
            rel = py.relative_to(root).with_suffix("")
            parts = rel.parts
            if "kit" in parts or "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods.append(".".join(parts))
    return mods


def test_every_module_outside_kit_imports_without_kit_or_isaac():
    """Import all pure modules in a fresh interpreter; none may pull in omni/carb/pxr/isaacsim/isaaclab."""
    mods = _pure_modules()
    assert "krabby.hal.isaac.main" in mods and "krabby.hal.isaac.stepper" in mods and "krabby.parkour.panel_model" in mods
    code = f"""
import importlib, json, sys
forbidden = {FORBIDDEN!r}
failed = {{}}
for m in {mods!r}:
    try:
        importlib.import_module(m)
    except ModuleNotFoundError as e:
        failed[m] = {{"missing": e.name or str(e)}}
    except Exception as e:
        failed[m] = {{"error": repr(e)}}
loaded = sorted(n for n in sys.modules if n.split('.')[0] in forbidden)
kit = sorted(n for n in sys.modules if '.kit' in n and n.startswith('krabby'))
print(json.dumps({{"loaded": loaded, "kit": kit, "failed": failed}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"pure modules imported {result['loaded']}"
    assert result["kit"] == []
    failed = result["failed"]
    # needing Kit / Isaac at import time is a layering bug; so is any error other than a missing
    # optional third-party package (those are imported lazily by design, and may be absent in CI)
    kit_failures = {m: e for m, e in failed.items() if str(e.get("missing", "")).split(".")[0] in FORBIDDEN}
    assert kit_failures == {}
    errors = {m: e for m, e in failed.items() if "error" in e or str(e["missing"]).startswith("krabby")}
    assert errors == {}
    assert len(failed) < len(mods) // 4, f"too many modules could not be imported here: {failed}"


def test_no_kit_import_statements_outside_kit():
    """A static check too: lazily-imported code paths (e.g. isaac/main.py) must not name omni & co. either."""
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(omni|carb|pxr|isaacsim)\b", re.M)
    offenders = []
    for root in EXTS.values():
        for py in (root / "krabby").rglob("*.py"):
            if "kit" in py.relative_to(root).parts:
                continue
            if pattern.search(py.read_text()):
                offenders.append(str(py.relative_to(REPO)))
    assert offenders == []


@pytest.mark.parametrize("name", sorted(EXTS))
def test_manifest_parses_and_is_complete(name):
    m = _manifest(name)
    pkg = m["package"]
    for key in ("version", "title", "description", "category", "keywords", "repository", "changelog", "readme"):
        assert key in pkg, key
    assert (EXTS[name] / pkg["changelog"]).is_file() and (EXTS[name] / pkg["readme"]).is_file()
    assert pkg["version"] in (EXTS[name] / pkg["changelog"]).read_text()
    assert [mod["name"] for mod in m["python"]["module"]] == [f"{name}.kit"]
    deps = m["dependencies"]
    for dep in ("omni.ui", "omni.kit.menu.utils"):
        assert dep in deps
    assert m["test"] and m["test"][0]["pythonTests"]["include"] == [f"{name}.kit.tests.*"]
    assert (EXTS[name] / name.replace(".", "/") / "kit" / "tests" / "__init__.py").is_file()


def test_dependencies_match_what_the_code_uses():
    hal = _manifest("krabby.hal")["dependencies"]
    for dep in ("omni.physx", "omni.usd", "omni.timeline", "isaacsim.core.api", "isaacsim.core.prims", "isaacsim.core.simulation_manager"):
        assert dep in hal
    parkour = _manifest("krabby.parkour")["dependencies"]
    assert "krabby.hal" in parkour and "omni.isaac.ml_archive" in parkour


def test_versions_agree():
    import krabby.hal

    dist = importlib.metadata.version("krabby")
    with open(REPO / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == dist
    assert krabby.hal.__version__ == dist
    for name in EXTS:
        assert _manifest(name)["package"]["version"] == dist


def test_manifest_settings_equal_the_typed_defaults():
    from krabby.hal.isaac.ext_settings import HalExtSettings
    from krabby.parkour.panel_model import ParkourExtSettings

    for name, cls in (("krabby.hal", HalExtSettings), ("krabby.parkour", ParkourExtSettings)):
        declared = _manifest(name)["settings"]["exts"][name]
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert declared == defaults, name


def test_kit_tests_are_not_collected_by_pytest():
    kit_tests = [EXTS["krabby.hal"] / "krabby/hal/kit/tests", EXTS["krabby.parkour"] / "krabby/parkour/kit/tests"]
    for d in kit_tests:
        files = [p.name for p in d.glob("*.py")]
        assert files and not any(n.startswith("test_") or n.endswith("_test.py") for n in files), files
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *map(str, kit_tests)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 5, out.stdout + out.stderr  # 5 = no tests collected


def test_apps_kit_files_register_isaac_sims_folders():
    """${app} is the folder of the app file being run (<repo>/apps): Isaac Sim's folders must come from the Kit executable."""
    apps = sorted((REPO / "apps").glob("*.kit"))
    assert apps
    for app in apps:
        with open(app, "rb") as f:
            data = tomllib.load(f)
        assert "krabby.hal" in data["dependencies"] and "isaacsim.exp.base" in data["dependencies"]
        folders = data["settings"]["app"]["exts"]["folders"]["++"]
        assert "${app}/../exts" in folders
        for layout in ("${exe-path}/..", "${exe-path}/../isaacsim"):  # binary / container, pip install
            for sub in ("apps", "exts", "extscache", "extsDeprecated"):
                assert f"{layout}/{sub}" in folders, (app.name, layout, sub)


def test_kit_test_script_runs_inside_isaac_sims_folders(tmp_path):
    """apps/kit-tests.sh runs omni.kit.test the way Isaac Sim runs its own extension tests."""
    root = tmp_path / "isaac-sim"
    (root / "kit").mkdir(parents=True)
    kit = root / "kit" / "kit"
    kit.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')  # a stand-in that prints its arguments
    kit.chmod(0o755)
    out = subprocess.run(["bash", str(REPO / "apps" / "kit-tests.sh"), str(root), "krabby.parkour"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    folders = [args[i + 1] for i, a in enumerate(args) if a == "--ext-folder"]
    assert folders == [str(root / sub) for sub in ("exts", "extscache", "extsDeprecated", "apps")] + [str(REPO / "exts")]
    assert args[:3] == ["--empty", "--enable", "omni.kit.test"]
    assert "--/exts/omni.kit.test/testExts/0='krabby.parkour'" in args and "--/exts/omni.kit.test/runTestsAndQuit=true" in args
    for doc in (EXTS["krabby.hal"] / "docs" / "isaac.md", EXTS["krabby.hal"] / "krabby/hal/kit/tests/__init__.py"):
        text = doc.read_text()
        assert "kit-tests.sh" in text and "--empty --enable omni.kit.test --ext-folder <repo>" not in text, doc


def test_hal_manifest_installs_pyzmq_through_kits_pip_api():
    pipapi = _manifest("krabby.hal")["python"]["pipapi"]
    assert any(req.startswith("pyzmq") for req in pipapi["requirements"])
    assert pipapi["modules"] == ["zmq"] and pipapi["use_online_index"] is True
