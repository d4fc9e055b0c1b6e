"""Generate the committed JSON Schema of the alert message from its pydantic model.

Takes nothing; writes docs/alert-payload.schema.json from
``edgemon.alerts.payload.AlertPayload``. With --check it writes nothing and
exits 1 when the committed file differs (CI and tests/test_alerts_payload.py
do the same comparison).

    python tools/gen_schema.py            # regenerate
    python tools/gen_schema.py --check    # verify
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.alerts.payload import schema_json  # noqa: E402

SCHEMA_PATH = REPO / "docs" / "alert-payload.schema.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed schema is stale")
    args = ap.parse_args(argv)
    text = schema_json()
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.is_file() else None
    if args.check:
        if current != text:
            print(f"{SCHEMA_PATH}: stale; run python tools/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
