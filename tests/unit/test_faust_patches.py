"""The guard of streams.worker.faust_patches: the upstream functions its patches replace, wrap or
rely on still have the source they were written against (UPSTREAM), other versions are refused
unless CORRIDOR_ALLOW_UNTESTED_FAUST is set, and `corridor worker` says so in one line.

When one of the fingerprint tests fails after an upgrade, its message names the patch module to
re-check against the new upstream code; record the new fingerprint in UPSTREAM only then."""
import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.errors import UnsupportedDependency
from streams.settings import Settings
from streams.worker import faust_patches

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "streams" / "worker" / "faust_patches"
PATCH_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")

#: Attributes a patch adds to an upstream class rather than replacing one (nothing upstream to
#: fingerprint): `Producer.mark_changelog_ends` (write_behind).
ADDED = {"mark_changelog_ends"}


@pytest.mark.parametrize("name", sorted(faust_patches.UPSTREAM))
def test_each_upstream_function_has_the_source_its_patch_was_written_against(name):
    expected, patch = faust_patches.UPSTREAM[name]
    where = f"streams/worker/faust_patches/{patch}.py"
    try:
        fn = faust_patches.upstream(name)
    except LookupError as exc:
        pytest.fail(f"{name} no longer exists upstream ({exc}): re-check {where}, which patches "
                    "or relies on it")
    if expected is None:
        return                          # compiled (Cython): that it exists is all we can check
    found = faust_patches.source_fingerprint(fn)
    assert found == expected, (
        f"{name} changed upstream (source fingerprint {found}, recorded {expected}): re-check "
        f"{where} against the new code, then record {found} in UPSTREAM")


def test_the_table_names_only_real_patch_modules_and_each_module_has_entries():
    named = {patch for _fp, patch in faust_patches.UPSTREAM.values()}
    assert named == set(PATCH_MODULES)


def _assigned_attributes(module: str) -> set[str]:
    """Attributes a module's `*_patch` functions assign on something other than an instance
    (`self`) or the package's own state: the upstream attributes they replace or add."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name.endswith("_patch"):
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if (isinstance(target, ast.Attribute)
                                and ast.unparse(target.value) not in ("self", "_package")
                                and not target.attr.startswith("_corridor")):
                            out.add(target.attr)
    return out


@pytest.mark.parametrize("module", PATCH_MODULES)
def test_every_upstream_attribute_a_patch_assigns_is_in_the_table(module):
    """So a renamed upstream attribute stops the worker (the name no longer resolves) rather
    than the patch adding an attribute that nothing calls."""
    tabled = {name.rsplit(".", 1)[1] for name, (_fp, patch) in faust_patches.UPSTREAM.items()
              if patch == module}
    assert _assigned_attributes(module) - ADDED <= tabled


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "corridor.faust_patches" and r.levelno == logging.WARNING]


def test_apply_refuses_another_faust_version_and_with_the_override_only_warns(monkeypatch, caplog):
    import faust
    monkeypatch.setattr(faust, "__version__", "0.0.0")
    with pytest.raises(UnsupportedDependency) as refused:
        faust_patches.apply(embedded=False)
    message = str(refused.value)
    assert "\n" not in message
    assert "faust-streaming 0.0.0" in message
    assert f"faust-streaming {faust_patches.FAUST_VERSION}" in message
    assert "CORRIDOR_ALLOW_UNTESTED_FAUST=1" in message
    with caplog.at_level(logging.WARNING, logger="corridor.faust_patches"):
        faust_patches.apply(embedded=False, allow_untested=True)
    [warning] = _warnings(caplog)
    assert "faust-streaming 0.0.0" in warning and faust_patches.FAUST_VERSION in warning


def test_the_supported_versions_apply_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="corridor.faust_patches"):
        faust_patches.apply(embedded=False)
        faust_patches.apply(embedded=False, allow_untested=True)
    assert _warnings(caplog) == []


def test_changed_upstream_code_is_refused_naming_its_patch_module_unless_overridden(monkeypatch):
    name = "faust.transport.drivers.aiokafka.Producer.flush"
    monkeypatch.setitem(faust_patches.UPSTREAM, name, ("0" * 16, "write_behind"))
    with pytest.raises(UnsupportedDependency, match=rf"{name} \(write_behind\)"):
        faust_patches.check()
    untested = faust_patches.check(allow_untested=True)
    assert f"{name} (write_behind)" in untested and "CORRIDOR_ALLOW_UNTESTED_FAUST" in untested


def test_a_missing_patch_target_is_refused_even_with_the_override(monkeypatch):
    name = "faust.transport.drivers.aiokafka.Producer.flush_renamed"
    monkeypatch.setitem(faust_patches.UPSTREAM, name, ("0" * 16, "write_behind"))
    for allow_untested in (False, True):
        with pytest.raises(UnsupportedDependency, match=rf"{name} \(write_behind\) no longer"):
            faust_patches.apply(embedded=False, allow_untested=allow_untested)


def test_a_faust_without_its_cython_stream_iterator_is_refused_unless_overridden(monkeypatch):
    import faust.streams
    monkeypatch.setattr(faust.streams, "_CStreamIterator", None)
    with pytest.raises(UnsupportedDependency, match="Cython stream iterator"):
        faust_patches.check()
    assert "stream yield patch (delivery) does nothing" in faust_patches.check(allow_untested=True)


def test_the_override_is_a_setting():
    assert Settings().allow_untested_faust is False
    assert Settings.from_env({"CORRIDOR_ALLOW_UNTESTED_FAUST": "1"}).allow_untested_faust is True
    assert Settings.from_env({"CORRIDOR_ALLOW_UNTESTED_FAUST": "0"}).allow_untested_faust is False


def _corridor_worker(faust_version: str, **env) -> subprocess.CompletedProcess:
    """`corridor worker` with faust.__version__ set as if another faust-streaming were installed,
    and a broker address that refuses connections (nothing listens on port 9)."""
    code = (f"import sys, faust; faust.__version__ = {faust_version!r}; "
            "from streams.cli import main; sys.exit(main(['worker']))")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CORRIDOR_")}
    environ.update(CORRIDOR_BROKER="kafka://127.0.0.1:9", CORRIDOR_BROKER_WAIT_SECONDS="0", **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_corridor_worker_on_another_faust_exits_2_with_one_line_before_reaching_the_broker():
    proc = _corridor_worker("0.0.0")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("corridor worker: faust-streaming 0.0.0 and aiokafka "), line
    assert faust_patches.FAUST_VERSION in line and "CORRIDOR_ALLOW_UNTESTED_FAUST=1" in line

