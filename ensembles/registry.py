"""The head registry: each head's estimator class per target and its parameter schema.

Adding a head is one entry in `HEADS` (its class in heads.py or a module of its own,
its schema beside the class); configs, the CLI and the tests read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator

from base.config import Param, check_params
from base.errors import HarnessError
from ensembles.finetune import FINETUNE_PARAMS, FinetuneHead, FinetuneRegressor
from ensembles.heads import (
    DROPOUT_PARAMS,
    LOGREG_PARAMS,
    RIDGE_PARAMS,
    DropoutHead,
    DropoutRegressor,
    LogisticHead,
    RidgeHead,
)

TARGETS = ("classes", "tags", "value")


@dataclass(frozen=True)
class HeadKind:
    """One registry entry: the estimator class for each target it fits (see
    CompetitionSpec.target) and the schema of its parameters."""

    name: str
    estimators: dict[str, type[BaseEstimator]]
    params: dict[str, Param]
    description: str

    @property
    def estimator(self) -> type[BaseEstimator]:
        """The estimator class for its first target (for defaults and checks)."""
        return next(iter(self.estimators.values()))


HEADS: dict[str, HeadKind] = {head.name: head for head in (
    HeadKind("logreg", {"classes": LogisticHead, "tags": LogisticHead}, LOGREG_PARAMS,
             "scikit-learn logistic regression, C chosen by inner CV (one per tag for tags)"),
    HeadKind("ridge", {"value": RidgeHead}, RIDGE_PARAMS,
             "scikit-learn ridge regression, the penalty chosen by leave-one-out CV (values)"),
    HeadKind("dropout", {"classes": DropoutHead, "tags": DropoutHead,
                         "value": DropoutRegressor}, DROPOUT_PARAMS,
             "Keras Dropout -> Dense(sigmoid/softmax; linear for values), the seed recipe's "
             "head"),
    HeadKind("finetune", {"classes": FinetuneHead, "tags": FinetuneHead,
                          "value": FinetuneRegressor}, FINETUNE_PARAMS,
             "the backbone's layers above its cut plus the dropout head, trained on the "
             "cached maps of a `_maps` backbone"),
)}


def get_head(head: str, *, ensemble: str) -> HeadKind:
    """The registry entry `head`; an unknown name fails naming the ensemble."""
    if head not in HEADS:
        raise HarnessError(f"ensemble {ensemble!r}: unknown head {head!r}; known: "
                           f"{', '.join(HEADS)}")
    return HEADS[head]


def head_params(head: str, params: Mapping[str, Any], *, ensemble: str,
                also: Mapping[str, Any] = ()) -> dict[str, Any]:
    """The head's own parameters from an ensemble's params, validated.

    Args:
        also: Keys another part of the run reads from the same table (not the head's):
            skipped here, and listed among the known keys when one is misspelt.

    Raises:
        HarnessError: unknown head, unknown key (naming the ensemble, the key and the
            known keys) or a bad value.
    """
    kind = get_head(head, ensemble=ensemble)
    own = {key: value for key, value in params.items() if key not in also}
    check_params(kind.params, own, where=f"ensemble {ensemble!r}", owner=f"head {head!r}",
                 extra=also)
    defaults = kind.estimator().get_params()
    if head == "dropout" and own.get("early_stopping", defaults["early_stopping"]) \
            and not own.get("validation_split", defaults["validation_split"]):
        raise HarnessError(f"ensemble {ensemble!r}: early_stopping needs a validation_split "
                           "(e.g. 0.1) to watch; set one or early_stopping = 0")
    return own


def check_target(head: str, target: str, *, ensemble: str) -> None:
    """Raises HarnessError when head `head` cannot fit `target` (naming the heads that can)."""
    kind = get_head(head, ensemble=ensemble)
    if target not in kind.estimators:
        able = [h.name for h in HEADS.values() if target in h.estimators]
        raise HarnessError(f"ensemble {ensemble!r}: head {head!r} cannot fit this "
                           f"competition's {target} target; use {' or '.join(able)}")


def linear_head(target: str) -> str:
    """The registry's linear head for `target`: logreg for classes and tags, ridge for
    values (the default ensembles use it)."""
    return "ridge" if target == "value" else "logreg"


def make_head(head: str, params: Mapping[str, Any], *, ensemble: str,
              also: Mapping[str, Any] = (), target: str = "classes") -> BaseEstimator:
    """A fresh, unfitted head of kind `head` (a HEADS name) for `target` with `params`
    (keys in `also` belong to another part of the run and are skipped, as in `head_params`).

    Raises:
        HarnessError: unknown head, one that cannot fit `target`, unknown parameter or bad
            value, naming `ensemble`.
    """
    own = head_params(head, params, ensemble=ensemble, also=also)
    check_target(head, target, ensemble=ensemble)
    return HEADS[head].estimators[target](**own)
