"""``--box``/``--recist``/``--point`` in the order given: each ``--point`` belongs to the box (or
RECIST line) just before it; points before any box make one point-only object.

Light module (argparse only), so that ``medsamkit --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

ORDER_DEST = "prompt_order"


class OrderedAppend(argparse.Action):
    """Append the value to ``dest`` (as ``action="append"``) and record ``(dest, value)`` in
    ``namespace.prompt_order``, which keeps the interleaving of the prompt options."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append(values)
        setattr(namespace, self.dest, items)
        order = list(getattr(namespace, ORDER_DEST, None) or [])
        order.append((self.dest, values))
        setattr(namespace, ORDER_DEST, order)


def add_point_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--point", action=OrderedAppend, default=[], metavar="X,Y[,Z],LABEL",
                   help="a click (LABEL 1 foreground, 0 background; Z on volumes) belonging to the --box just before "
                        "it, applied in order; points before any --box make a point-only object (repeatable)")
    p.add_argument("--local-clicks", action="store_true",
                   help="each click changes the mask only near itself and its pixel keeps the clicked label, even "
                        "where the model ignores the click (RefineConfig.local_clicks; docs/refinement.md)")


@dataclass
class PointGroups:
    """The ``--point`` texts grouped by owner: ``leading`` (before any box: a point-only object),
    ``by_box[i]`` after the i-th ``--box`` and ``by_recist[j]`` after the j-th ``--recist``."""

    leading: list[str] = field(default_factory=list)
    by_box: dict[int, list[str]] = field(default_factory=dict)
    by_recist: dict[int, list[str]] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.leading or self.by_box or self.by_recist)


def group_points(args: argparse.Namespace) -> PointGroups:
    """Assign each ``--point`` to the ``--box`` or ``--recist`` given just before it."""
    groups = PointGroups()
    owner: tuple[str, int] | None = None
    counts = {"box": 0, "recist": 0}
    for dest, value in getattr(args, ORDER_DEST, None) or []:
        if dest in counts:
            owner = (dest, counts[dest])
            counts[dest] += 1
        elif dest == "point":
            if owner is None:
                groups.leading.append(value)
            else:
                target = groups.by_box if owner[0] == "box" else groups.by_recist
                target.setdefault(owner[1], []).append(value)
    return groups
