"""Logging and progress-bar setup, the same for the CLI, benchmarks and notebooks."""

from __future__ import annotations

import logging
import os
import sys

# Libraries whose INFO chatter would drown the harness's own lines.
NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "urllib3", "ray",
                 "openvino")


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """One line per message on stderr: DEBUG with `verbose`, WARNING with `quiet`, else INFO.

    `quiet` also turns every tqdm bar off (the kaggle client's too: tqdm >= 4.66 reads
    TQDM_DISABLE), and TensorFlow's C++ start-up chatter is hidden unless already set.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
