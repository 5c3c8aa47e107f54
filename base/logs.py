"""Logging and progress-bar setup, the same for the CLI, benchmarks and notebooks."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

# Libraries whose INFO chatter would drown the harness's own lines.
NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "urllib3", "ray",
                 "openvino")
# HARNESS_LOG=debug is --verbose (debug lines, tracebacks, TensorFlow's native logging),
# HARNESS_LOG=warning is --quiet; for runs whose command line cannot be changed (make,
# notebooks, Ray workers).
LOG_ENV = "HARNESS_LOG"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """One line per message on stderr: DEBUG with `verbose`, WARNING with `quiet`, else INFO.

    `quiet` also turns every tqdm bar off (the kaggle client's too: tqdm >= 4.66 reads
    TQDM_DISABLE). TensorFlow's native start-up lines are hidden (quiet_tensorflow_import)
    unless `verbose`. `HARNESS_LOG` (debug, info, warning) overrides both flags.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    level = LOG_LEVELS.get(os.environ.get(LOG_ENV, "").strip().lower(), level)
    if level == logging.DEBUG:
        # Inherited by this run's workers (Ray actors), which then log natively too.
        os.environ[LOG_ENV] = "debug"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        quiet_tensorflow_import()
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if level >= logging.WARNING:
        os.environ["TQDM_DISABLE"] = "1"


def native_logging_wanted() -> bool:
    """Whether this process shows TensorFlow's native logging (HARNESS_LOG=debug)."""
    return os.environ.get(LOG_ENV, "").strip().lower() == "debug"


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to a temporary file meanwhile;
    replayed on stderr only if the block raises (so a failed import still says why)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_import() -> None:
    """Make this process's first `import tensorflow` (direct, or through keras) quiet.

    TensorFlow's C++ start-up lines ("All log messages before absl::InitializeLog()",
    "Could not find cuda drivers", "failed call to cuInit") are written by native code
    before its logging reads TF_CPP_MIN_LOG_LEVEL, on every machine without CUDA. An
    import hook, not a wrapper at each call site: TensorFlow is imported lazily from many
    places (extraction, Keras heads, NNCF), and the first of them must be the quiet one.
    Does nothing if TensorFlow is already imported, the hook is already installed, or
    HARNESS_LOG=debug (native_logging_wanted) asks for TensorFlow's own lines.
    """
    if native_logging_wanted() or "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder)
                                          for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the normal path finder does, with a loader that runs the
    import and the first device query (cuInit's line) under native_stderr_captured."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once per process
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """The real loader of `tensorflow`, run with native stderr captured; afterwards the
    module's loader is the real one again (nothing else sees this wrapper)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with native_stderr_captured():
            self.loader.exec_module(module)
            module.config.list_physical_devices()
        module.__loader__ = module.__spec__.loader = self.loader
