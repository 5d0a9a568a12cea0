"""Kernels that only an environment manager's KernelSpecManager knows (nb_conda_kernels and
the like) are found the way Jupyter finds them, after the fast file lookup misses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, build_notebook

pytestmark = pytest.mark.kernel

MANAGER = textwrap.dedent(
    f"""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel

    class EnvManager(KernelSpecManager):
        '''Knows one kernel, found in no kernels folder: like nb_conda_kernels.'''

        def find_kernel_specs(self):
            return {{**super().find_kernel_specs(), "env-python": "/nowhere"}}

        def get_kernel_spec(self, name):
            if name == "env-python":
                return KernelSpec(
                    argv=[{sys.executable!r}, "-m", "ipykernel_launcher", "-f",
                          "{{connection_file}}"],
                    display_name="Python (environment)",
                    language="python",
                )
            return super().get_kernel_spec(name)
    """
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "envmanager.py").write_text(MANAGER)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "JUPYTER_"))}
    base.update(KILN_HOME=str(tmp_path / "home"), PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")]
    ))  # fmt: skip
    nbformat.write(build_notebook(["import sys\nprint('ran in', sys.prefix)"], kernel="env-python"),
                   tmp_path / "nb.ipynb")  # fmt: skip
    return base


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [KILN, "run", "nb.ipynb", "--engine", "kernel", "--log-output"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)


def test_unknown_kernel_without_the_manager_is_a_clear_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    done = _run(tmp_path, env)
    assert done.returncode == 2 and "no Jupyter kernel named 'env-python'" in done.stderr


def test_the_jupyter_servers_configured_manager_is_used(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"kernel_spec_manager_class": "envmanager.EnvManager"}})
    )
    done = _run(tmp_path, {**env, "JUPYTER_CONFIG_DIR": str(config)})
    assert done.returncode == 0, done.stderr
    assert "ran in" in done.stdout


def test_the_manager_can_be_named_in_the_environment(tmp_path: Path, env: dict[str, str]) -> None:
    done = _run(tmp_path, {**env, "KILN_KERNEL_SPEC_MANAGER": "envmanager.EnvManager"})
    assert done.returncode == 0, done.stderr
    bad = _run(tmp_path, {**env, "KILN_KERNEL_SPEC_MANAGER": "envmanager.Nope"})
    assert bad.returncode == 2 and "cannot load the kernel spec manager" in bad.stderr
