"""Which classes of a trained run are scored against which classes of another labelled set.

A run class is paired with at most one external class and vice versa, in this order: a user mapping (a YAML
file `run class: external class`, `null` leaving the class out), the exact name, the same name up to case,
spaces, underscores and hyphens ("spelling"), and the built-in SYNONYMS of the CXR datasets spml reads.
Classes without a counterpart are left out on both sides, with the reason: never scored as negatives.
One-to-many and many-to-one pairings are refused (no rule says how to combine labels or outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from spml.data.labels import spelling_key
from spml.data.table import DataError

# Findings that NIH ChestX-ray14 (and the synthetic set, which uses its names) and CheXpert / MIMIC-CXR
# name differently but define alike (docs/architecture.md lists the pairs left out and why).
# NIH "Effusion" is mined from reports that mention a (pleural) effusion; CheXpert/MIMIC "Pleural Effusion" is
# the same observation. Both are read from radiology reports by rule-based labelers.
SYNONYMS: tuple[tuple[str, str], ...] = (("Effusion", "Pleural Effusion"),)

MATCHES = ("user", "exact", "spelling", "synonym")


@dataclass(frozen=True)
class ClassPair:
    """One scored pair: a run class and the external class it is scored against.

    Attributes:
        run: the run's class.
        external: the external set's class.
        match: how they were paired, one of MATCHES.
    """

    run: str
    external: str
    match: str  # one of MATCHES


@dataclass
class ClassMapping:
    """Pairs in run-class order; the classes left out on each side -> why.

    Attributes:
        pairs: the scored pairs, in run-class order.
        run_left_out: {run class: why it is left out}.
        external_left_out: {external class: why it is left out}.
    """

    pairs: list[ClassPair]
    run_left_out: dict[str, str] = field(default_factory=dict)
    external_left_out: dict[str, str] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per class of either side: run_class, external_class, match, scored, reason."""
        rows = [
            {"run_class": p.run, "external_class": p.external, "match": p.match, "scored": True, "reason": ""}
            for p in self.pairs
        ]
        rows += [
            {"run_class": name, "external_class": "", "match": "", "scored": False, "reason": why}
            for name, why in self.run_left_out.items()
        ]
        rows += [
            {"run_class": "", "external_class": name, "match": "", "scored": False, "reason": why}
            for name, why in self.external_left_out.items()
        ]
        return pd.DataFrame(rows, columns=["run_class", "external_class", "match", "scored", "reason"])

    def summary_lines(self) -> list[str]:
        """Console lines: the pairs, then each side's left-out classes with their reasons."""
        pairs = ", ".join(p.run if p.match == "exact" else f"{p.run} = {p.external} ({p.match})" for p in self.pairs)
        lines = [f"scored {len(self.pairs)} classes: {pairs}"]
        for side, left_out in (("run", self.run_left_out), ("external", self.external_left_out)):
            if left_out:
                by_reason: dict[str, list[str]] = {}
                for name, why in left_out.items():
                    by_reason.setdefault(why, []).append(name)
                lines += [f"{side} classes left out ({why}): {', '.join(names)}" for why, names in by_reason.items()]
        return lines


def synonym_of(name: str) -> set[str]:
    """The SYNONYMS partners of `name`, in either direction.

    Args:
        name: a class name.

    Returns:
        The partners (empty when none).
    """
    return {b for a, b in SYNONYMS if a == name} | {a for a, b in SYNONYMS if b == name}


def automatic_match(name: str, available: Sequence[str]) -> tuple[str, str] | None:
    """The external class of a run class by exact name, spelling or synonym among `available`.

    Two candidates at one level (two spellings) are a DataError: a mapping file must choose.

    Args:
        name: the run class.
        available: the external classes.

    Returns:
        (external class, match), or None if there is none.
    """
    if name in available:
        return name, "exact"
    for match, candidates in (
        ("spelling", [c for c in available if spelling_key(c) == spelling_key(name)]),
        ("synonym", [c for c in available if c in synonym_of(name)]),
    ):
        if len(candidates) > 1:
            raise DataError(
                f"run class {name!r} matches external classes {candidates} ({match}); say which in a "
                "class mapping file (--mapping)"
            )
        if candidates:
            return candidates[0], match
    return None


def map_classes(
    run_classes: Sequence[str],
    external_classes: Sequence[str],
    user: Mapping[str, str | None] | None = None,
    source: str = "the class mapping",
) -> ClassMapping:
    """Pair run classes with external classes (see the module docstring).

    `user` entries win; their keys must be run classes and their values external classes or None. Two run classes
    paired with one external class (many-to-one) and a mapping that pairs nothing are DataErrors.

    Args:
        run_classes: the run's classes.
        external_classes: the external set's classes.
        user: the user mapping {run class: external class or None} (None: none).
        source: names the mapping in errors and reasons.

    Returns:
        The ClassMapping.
    """
    user = dict(user or {})
    for key, value in user.items():
        if key not in run_classes:
            raise DataError(f"{source}: {key!r} is not a class of the run; its classes are {list(run_classes)}")
        if value is not None and value not in external_classes:
            raise DataError(
                f"{source}: {key!r} maps to {value!r}, which is not a class of the external set; its "
                f"classes are {list(external_classes)}"
            )
    pairs, run_left_out, taken = [], {}, {}
    for name in run_classes:
        if name in user:
            found = None if user[name] is None else (user[name], "user")
            why = f"left out by {source}"
        else:
            found = automatic_match(name, external_classes)
            why = "no external class of that name, spelling or synonym"
        if found is None:
            run_left_out[name] = why
            continue
        external, match = found
        if external in taken:
            raise DataError(
                f"run classes {taken[external]!r} and {name!r} both pair with external class "
                f"{external!r}; many-to-one scoring is not supported: map one of them to null in a "
                "class mapping file (--mapping)"
            )
        taken[external] = name
        pairs.append(ClassPair(name, external, match))
    if not pairs:
        raise DataError(
            f"no class of the run {list(run_classes)} has a counterpart among the external classes "
            f"{list(external_classes)}; pair them in a class mapping file (--mapping)"
        )
    why = (
        f"no run class paired with it by name, spelling, synonym or {source}"
        if user
        else "no run class of that name, spelling or synonym"
    )
    external_left_out = {name: why for name in external_classes if name not in taken}
    return ClassMapping(pairs, run_left_out, external_left_out)
