"""evaluate: score the pipeline's stages against reference annotations.

One module per ``edgemon evaluate <name>`` sub-command; each module exposes
``register(subparsers)``. Evaluation runs the same stage objects as the
daemon, never a second implementation. Shared helpers live in ``common``.
"""
