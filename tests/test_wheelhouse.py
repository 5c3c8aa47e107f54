"""`harness wheelhouse`: the folder an offline Kaggle notebook installs the harness from.

The notebook image is simulated by a folder of links to this environment's installed
packages (the harness itself left out) that a fresh virtualenv sees through a .pth file;
pip then installs from the wheel folder with no index at all.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from harness.wheelhouse import KAGGLE_IMAGE, PROJECT, build_wheelhouse, closure, wheels_needed


def test_the_wheel_holds_every_package_pyproject_ships():
    import tomllib

    from harness.wheelhouse import PACKAGES, REPO

    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    assert found == [f"{package}*" for package in PACKAGES]


def test_the_wheels_needed_are_what_a_notebook_image_lacks():
    needed = dict(wheels_needed())
    for name in ("openvino", "nncf", "ray", "kaggle", "kagglesdk"):  # the harness's own
        assert name in needed, name
    for name in ("tensorflow", "numpy", "pandas", "scikit-learn", "h5py", "keras"):
        assert name not in needed, name  # the image's, and what they need
    assert not set(needed) & closure(list(KAGGLE_IMAGE))
    assert needed["ray"] and "pyarrow" in needed  # ray[data]'s extra is followed


@pytest.mark.slow
def test_an_offline_install_from_the_wheel_folder(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    image = tmp_path / "image-site"  # what the notebook image has: all but the harness
    image.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("kaggle_image_harness", "__editable__")):
            (image / entry.name).symlink_to(entry)
    wheels = build_wheelhouse(tmp_path / "wheelhouse", download=False)
    assert [w.name.split("-")[0] for w in wheels] == ["kaggle_image_harness"]
    assert "tensorflow==" in (tmp_path / "wheelhouse" / "ASSUMED.txt").read_text()

    venv = tmp_path / "notebook"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    venv_site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                               check=True).stdout.strip()
    (Path(venv_site) / "notebook-image.pth").write_text(f"{image}\n")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--find-links",
         str(tmp_path / "wheelhouse"), PROJECT], capture_output=True, text=True, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = subprocess.run(
        [str(python), "-c", "import harness.api, features.extract; print(harness.api.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=False)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(venv_site)  # the wheel's copy, not the checkout
    listed = subprocess.run([str(venv / "bin" / "harness"), "competitions"],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert listed.returncode == 0 and "aptos2019-blindness-detection" in listed.stdout
