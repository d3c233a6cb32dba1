"""The image's build stage, run without Docker (no engine or registry here): every ENV, WORKDIR,
COPY and RUN of the Dockerfile's first stage, in that order, from exactly the files it copies,
into a fresh virtualenv standing for /opt/venv and a fresh directory standing for /app. Then the
installed `corridor worker --help` runs and every module of the package imports from it.

Issue 15: the dependency layer's placeholder packages did not match pyproject's package list and
`pip install .` stopped; nothing in `make test` built the image. A file or package that drifts
from what the Dockerfile copies fails here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_deploy import dockerfile

REPO = Path(__file__).resolve().parents[2]


def build_stage() -> list[tuple[str, str]]:
    ins = dockerfile()
    froms = [i for i, (op, _) in enumerate(ins) if op == "FROM"]
    assert len(froms) == 2 and ins[froms[0]][1].endswith("AS build"), "a build stage, then the image"
    return ins[froms[0] + 1:froms[1]]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("image")
    venv, app = root / "opt-venv", root / "app"
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "HOME": str(root), "PIP_FIND_LINKS": os.environ.get("PIP_FIND_LINKS", ""),
           "PIP_CERT": os.environ.get("PIP_CERT", ""), "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", "")}
    env = {k: v for k, v in env.items() if v}
    cwd = root

    def here(text: str) -> str:
        return text.replace("/opt/venv", str(venv)).replace("/app", str(app))

    for op, args in build_stage():
        if op == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
        elif op == "WORKDIR":
            cwd = Path(here(args))
            cwd.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = args.split()
            target = cwd / dest if not dest.startswith("/") else Path(here(dest))
            for src in sources:
                path = REPO / src.rstrip("/")
                assert path.exists(), f"the Dockerfile copies {src}, which does not exist"
                if path.is_dir():
                    shutil.copytree(path, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
        elif op == "RUN":
            done = subprocess.run(["bash", "-ec", here(args)], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        else:
            pytest.fail(f"the build stage has a {op} this test does not know how to run")
    return {"venv": venv, "app": app, "env": env}


def test_the_build_stage_installs_a_worker_that_starts(built):
    corridor = built["venv"] / "bin" / "corridor"
    done = subprocess.run([str(corridor), "worker", "--help"], capture_output=True, text=True,
                          env=built["env"], cwd=built["app"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: corridor worker" in done.stdout


def test_every_module_imports_from_the_built_image(built):
    python = built["venv"] / "bin" / "python"
    code = ("import importlib, pkgutil, streams\n"
            "mods = [m.name for m in pkgutil.walk_packages(streams.__path__, 'streams.')"
            " if not m.name.endswith('__main__')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "print(streams.__file__); print(len(mods))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          env=built["env"], cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr
    where, count = done.stdout.split()
    assert Path(where).is_relative_to(built["app"]), "imported from the image's /app"
    expected = [p for p in (REPO / "streams").rglob("*.py") if p.name != "__main__.py"]
    assert int(count) == len(expected) - 1      # every module (streams/__init__ is `streams`)


def test_the_packages_built_are_the_packages_in_the_source(built):
    python = built["venv"] / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import setuptools; print(sorted(setuptools."
                           "find_packages(include=['streams*'])))"],
                          capture_output=True, text=True, env=built["env"], cwd=built["app"])
    in_image = eval(done.stdout)                # a printed list of names
    in_repo = sorted(".".join(p.parent.relative_to(REPO).parts)
                     for p in (REPO / "streams").rglob("__init__.py"))
    assert in_image == in_repo


def test_every_distribution_in_the_image_is_pinned(built):
    """deploy/constraints.txt makes the image reproducible: nothing installed is left unpinned."""
    pip = built["venv"] / "bin" / "pip"
    done = subprocess.run([str(pip), "freeze", "--exclude-editable"], capture_output=True,
                          text=True, env=built["env"])
    installed = {ln for ln in done.stdout.splitlines() if ln and not ln.startswith("#")}
    pinned = {ln for ln in (REPO / "deploy" / "constraints.txt").read_text().splitlines()
              if ln and not ln.startswith("#")}
    assert installed <= pinned, "pin these in deploy/constraints.txt:\n" + "\n".join(
        sorted(installed - pinned))
    assert "rocksdict==0.3.29" in installed          # the RocksDB store works in the image


def test_the_image_listens_where_prometheus_can_scrape_it():
    env = dict(pair.split("=", 1) for op, args in dockerfile() if op == "ENV"
               for pair in args.split())
    assert env["CORRIDOR_WEB_HOST"] == "0.0.0.0"


def test_the_worker_image_carries_no_report_or_plot_stack(built):
    """pandas, pyarrow and matplotlib (about 200 MB) serve `corridor report` only: they are the
    `report` extra, not in the image, and `corridor report` there says what to install, in one line."""
    pip = built["venv"] / "bin" / "pip"
    done = subprocess.run([str(pip), "freeze", "--exclude-editable"], capture_output=True,
                          text=True, env=built["env"])
    names = {ln.split("==")[0].lower() for ln in done.stdout.splitlines() if "==" in ln}
    assert not names & {"pandas", "pyarrow", "matplotlib", "numpy"}, sorted(names)
    report = subprocess.run([str(built["venv"] / "bin" / "corridor"), "report", str(REPO / "README.md")],
                            capture_output=True, text=True, env=built["env"], cwd=built["app"])
    assert report.returncode == 2
    assert report.stderr.strip().splitlines() == [
        "corridor report: needs pandas, pyarrow, matplotlib: install the report extra "
        "(pip install 'corridor[report]')"]
