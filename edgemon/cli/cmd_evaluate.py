"""`edgemon evaluate <name>`: scoring commands, one module per name in edgemon/evaluate/."""
from __future__ import annotations

import importlib
import pkgutil


def register(sub) -> None:
    import edgemon.evaluate as pkg

    p = sub.add_parser("evaluate", help="score detectors against reference annotations",
                       description="Score a stage of the pipeline against a database's reference annotations.")
    inner = p.add_subparsers(dest="evaluation", metavar="EVALUATION")
    inner.required = True
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"edgemon.evaluate.{mod.name}")
        if hasattr(module, "register"):
            module.register(inner)
