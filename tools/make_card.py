"""Write (or refresh) a model card next to a .tflite file.

Takes a .tflite file and a JSON of descriptive fields (name, version, window,
classes, metrics, ...); gives a validated card whose file/sha256/size_bytes,
input_shape/input_dtype and int8 quantization are read from the model itself,
so they can never be typed wrong.

    python tools/make_card.py models/af_tachogram.tflite --fields fields.json \
        [--out models/af_tachogram.card.json]
    python tools/make_card.py models/af_tachogram.tflite --refresh   # re-hash after retraining
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemon.detect.card import ModelCard, file_sha256, write_card  # noqa: E402


def tflite_io(model_file: str | Path) -> dict:
    """Input shape/dtype and quantisation of a .tflite file, read with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter
    import numpy as np

    it = Interpreter(model_path=str(model_file))
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    info = {"input_shape": [int(d) for d in inp["shape"]], "input_dtype": np.dtype(inp["dtype"]).name}
    if info["input_dtype"] != "float32":
        info["quantization"] = {
            "input_scale": float(inp["quantization"][0]), "input_zero_point": int(inp["quantization"][1]),
            "output_scale": float(out["quantization"][0]), "output_zero_point": int(out["quantization"][1]),
        }
    return info


def make_card(model_file: str | Path, fields: dict, out: str | Path | None = None) -> ModelCard:
    model_file = Path(model_file)
    out = Path(out) if out else model_file.with_suffix("").with_suffix(".card.json")
    d = dict(fields)
    d.update(tflite_io(model_file))
    d["file"] = model_file.name if model_file.parent.resolve() == out.parent.resolve() else \
        str(model_file.resolve().relative_to(out.parent.resolve()))
    d["sha256"] = file_sha256(model_file)
    d["size_bytes"] = model_file.stat().st_size
    card = ModelCard.model_validate(d)
    write_card(card, out)
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help=".tflite file")
    ap.add_argument("--fields", help="JSON file with the descriptive card fields")
    ap.add_argument("--refresh", action="store_true", help="take the fields from the existing card")
    ap.add_argument("--out", help="card path (default: <model>.card.json)")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else Path(a.model).with_suffix("").with_suffix(".card.json")
    if a.refresh:
        fields = json.loads(out.read_text())
    elif a.fields:
        fields = json.loads(Path(a.fields).read_text())
    else:
        ap.error("give --fields FILE or --refresh")
    card = make_card(a.model, fields, out)
    print(f"wrote {out}: {card.name} {card.version} sha256={card.sha256} size={card.size_bytes} B", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
