"""``pip install .`` (not only ``-e``) gives a working bot: every package, the personas, the
page and ``bot`` itself are in the wheel, and the installed copy runs from anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("persona_video_agent-*.whl")
    return path


def test_the_wheel_holds_the_whole_bot(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("bot.py", "session/owner.py", "session/launch.py", "conversation/lifecycle.py",
                     "config/options.py", "pipeline/turn_taking.py",
                     "pipeline/interactions/processor.py", "services/tavus/api.py",
                     "services/pipecat_seam.py", "services/local/llama_server.py",
                     "transports/file.py", "tools/builtin.py", "web/index.html", "web/local.js",
                     "personas/default.json", "persona_tests/cli.py", "persona_tests/report.py",
                     "personas/scenarios/default.yaml"):
        assert expected in names, f"{expected} is not in the wheel"
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "persona-agent = bot:main" in scripts
    assert "persona-tests = persona_tests.cli:main" in scripts


def test_the_installed_copy_runs_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(PYTHONPATH=str(target), PERSONA_DOTENV="0", PERSONA_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-m", "bot", "--check"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Persona: Ava ({target / 'personas' / 'default.json'})" in result.stdout
