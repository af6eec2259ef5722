"""The map of distillation: every registered method placed by the form of the knowledge it
transfers (rows) and its learning mode (columns), read from the methods registry, so a
method registered later appears on the map by itself, in the cells its class names
(``Method.knowledge`` and ``Method.modes``).

Cells no kdviz method fills say so; the graph row is empty because kdviz has no graph
models (graph-based KD, e.g. distilling graph convolutional networks, Yang et al. CVPR 2020).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import methods

KNOWLEDGE = {  # row key -> (title, what is transferred)
    "logit": ("Label / logit", "the teacher's outputs: soft targets, logits"),
    "feature": ("Intermediate feature", "hidden activations: hint layers, attention maps"),
    "parameter": ("Parameter", "the teacher's weights themselves (sharing, averaging, initialisation)"),
    "relational": ("Structured / relational", "relations between examples or between layers"),
    "graph": ("Graph", "knowledge of or for graph neural networks"),
}
MODES = {  # column key -> (title, who learns from whom)
    "offline": ("Offline", "a trained, frozen teacher"),
    "online": ("Online", "teacher and students learn together"),
    "self": ("Self", "the network teaches itself (or its own earlier generation)"),
    "data-free": ("Data-free", "no training data: images are synthesised from the teacher"),
    "multi-teacher": ("Multi-teacher", "several teachers at once"),
    "privileged": ("Privileged", "the teacher sees what the student never will"),
}
EMPTY_NOTES = {"graph": "kdviz has no graph models: graph-based KD (e.g. Yang et al. 2020) is not here."}


@dataclass(frozen=True)
class Entry:
    name: str
    label: str
    paper: str
    idea: str  # one line
    page: str  # where it runs: its own page, or "" for the Training lab


def idea(about: str) -> str:
    """The first sentence of a method's description."""
    first = about.split(". ")[0].strip()
    return first if first.endswith(".") else first + "."


def entry(method: methods.Method) -> Entry:
    return Entry(method.name, method.label, method.paper, idea(method.about), method.page)


def grid(registry: dict[str, methods.Method] | None = None) -> dict[tuple[str, str], list[Entry]]:
    """(knowledge, mode) -> the methods in that cell, in registration order; every cell present."""
    cells = {(k, m): [] for k in KNOWLEDGE for m in MODES}
    for method in (methods.METHODS if registry is None else registry).values():
        for k in method.knowledge:
            for m in method.modes:
                if (k, m) in cells:
                    cells[(k, m)].append(entry(method))
    return cells


def unplaced(registry: dict[str, methods.Method] | None = None) -> list[Entry]:
    """Registered methods the map cannot place: no knowledge form or mode, or unknown ones
    (the plain baseline is not distillation and is left out)."""
    reg = methods.METHODS if registry is None else registry
    return [entry(m) for m in reg.values() if m.name != "plain" and not (
        set(m.knowledge) & set(KNOWLEDGE) and set(m.modes) & set(MODES))]


def table(registry: dict[str, methods.Method] | None = None) -> list[dict]:
    """Every placed method once, with its cells in words, its paper and its idea (the page's legend)."""
    reg = methods.METHODS if registry is None else registry
    return [{"method": m.label, "knowledge": ", ".join(KNOWLEDGE[k][0] for k in m.knowledge if k in KNOWLEDGE),
             "mode": ", ".join(MODES[k][0] for k in m.modes if k in MODES), "paper": m.paper, "idea": idea(m.about)}
            for m in reg.values() if set(m.knowledge) & set(KNOWLEDGE) and set(m.modes) & set(MODES)]
