"""`harness wheelhouse DIR` (`make wheelhouse`): a folder to upload as a Kaggle dataset, from
which an offline notebook installs the harness:

    !pip install --no-index --find-links /kaggle/input/DATASET kaggle-image-harness

It holds the harness's own wheel and the wheels of what it needs beyond a Kaggle notebook
image (`KAGGLE_IMAGE` and everything those need are assumed installed there), at the
versions installed here (the lock's), and `ASSUMED.txt`, the list of what it counts on
finding. Which wheels are needed is read from the installed packages' metadata (their
requirements, extras and markers), not guessed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from base.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
PROJECT = "kaggle-image-harness"
PACKAGES = ("base", "competition", "features", "ensembles", "submissions", "harness")
# What a Kaggle notebook image has installed (its Python image's core scientific stack).
# The kaggle client is not here: images carry 1.x, and the harness drives 2.x.
KAGGLE_IMAGE = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "scipy", "h5py",
                "pillow", "tqdm", "matplotlib", "requests", "six")


def _requirements(name: str, extras: frozenset[str]) -> list[Requirement]:
    """The requirements of installed distribution `name` that apply here (markers
    evaluated, with its `extras` asked for)."""
    try:
        listed = metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        raise HarnessError(f"{name} is not installed here; run `make setup` first") from None
    applying = []
    for text in listed:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in (extras or {""})):
            applying.append(requirement)
    return applying


def closure(names: tuple[str, ...] | list[str]) -> set[str]:
    """`names` and every distribution they need, transitively (canonical names)."""
    seen: set[str] = set()
    todo = [(canonicalize_name(n), frozenset()) for n in names]
    done: set[tuple[str, frozenset]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        for requirement in _requirements(name, extras):
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return seen


def wheels_needed(assumed: tuple[str, ...] | list[str] = KAGGLE_IMAGE) -> list[tuple[str, str]]:
    """(name, installed version) of every distribution the harness needs that `assumed`
    (and what it needs) does not bring, sorted; the harness itself excluded."""
    extra = closure([PROJECT]) - closure(list(assumed)) - {canonicalize_name(PROJECT)}
    return sorted((name, metadata.version(name)) for name in extra)


def build_wheelhouse(dest: Path, assumed: tuple[str, ...] | list[str] = KAGGLE_IMAGE, *,
                     download: bool = True) -> list[Path]:
    """Write the harness's wheel, the needed wheels (`download`: from the package index,
    the one step that needs a network) and ASSUMED.txt into `dest`; returns the wheels.

    Raises:
        HarnessError: pip could not build or download a wheel (its last line said why).
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    # Built from a copy of the sources: setuptools' build/ folder in the checkout would
    # carry modules deleted since into the wheel.
    with tempfile.TemporaryDirectory(prefix="harness-wheel-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(REPO / name, tmp)
        for package in PACKAGES:
            shutil.copytree(REPO / package, Path(tmp) / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), tmp)
    needed = wheels_needed(assumed)
    if download and needed:
        _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
             *(f"{name}=={version}" for name, version in needed))
    present = sorted((n, metadata.version(n)) for n in closure(list(assumed)))
    (dest / "ASSUMED.txt").write_text(
        "# Installed in the notebook image, not in this folder (pip install --no-index\n"
        "# --find-links THIS_FOLDER kaggle-image-harness uses them as they are):\n"
        + "".join(f"{name}=={version}\n" for name, version in present))
    return sorted(dest.glob("*.whl"))


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet"], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise HarnessError(f"pip {args[0]} failed: {last}")
