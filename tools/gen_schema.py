"""Generate the committed JSON Schemas from their pydantic models.

Takes nothing; writes docs/alert-payload.schema.json (the alert message,
``edgemon.alerts.payload.AlertPayload``) and docs/device-config.schema.json
(the device config file, ``edgemon.config.DeviceConfig``). With --check it
writes nothing and exits 1 when a committed file differs (the tests do the
same comparison).

    python tools/gen_schema.py            # regenerate
    python tools/gen_schema.py --check    # verify
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgemon.alerts.payload import schema_json as payload_schema  # noqa: E402
from edgemon.config import schema_json as config_schema  # noqa: E402

SCHEMAS = {REPO / "docs" / "alert-payload.schema.json": payload_schema,
           REPO / "docs" / "device-config.schema.json": config_schema}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed schema is stale")
    args = ap.parse_args(argv)
    stale = 0
    for path, generate in SCHEMAS.items():
        text = generate()
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if args.check:
            if current != text:
                print(f"{path}: stale; run python tools/gen_schema.py", file=sys.stderr)
                stale = 1
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return stale


if __name__ == "__main__":
    sys.exit(main())
