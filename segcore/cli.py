"""Command line: `python -m segcore {list,train,eval,predict,bench,export}`.

Every user-facing problem (bad path, unknown model, damaged file) becomes one line on stderr and exit code 1;
subcommands whose issue has not landed say so and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from segcore.errors import SegcoreError

NOT_YET = {"train": 5, "eval": 5, "bench": 3}


def _model_rows(task: str | None, details: bool) -> list[dict]:
    from segcore.registry import create_model, list_models, model_info

    rows = []
    for name in list_models(task):
        row = model_info(name)
        if details:
            import torch
            from torch.utils.flop_counter import FlopCounterMode

            num_classes = 1 if row["task"] == "saliency" else 2
            model = create_model(name, num_classes).eval()
            row["parameters"] = sum(parameter.numel() for parameter in model.parameters())
            height, width = row["default_size"]
            counter = FlopCounterMode(display=False)
            with counter, torch.inference_mode():
                model(torch.zeros(1, 3, height, width))
            # flop_counter counts a multiply-add as 2 FLOPs; GMACs (papers' "operations") are half of it.
            row["gflops"] = counter.get_total_flops() / 1e9
            row["num_classes_measured"] = num_classes
        rows.append(row)
    return rows


def _cmd_list(args) -> int:
    rows = _model_rows(args.task, args.details)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.markdown:
        header = "| model | task | paper | default size | real-time |"
        rule = "|---|---|---|---|---|"
        if args.details:
            header += " parameters (M) | GFLOPs (2 per MAC) |"
            rule += "---:|---:|"
        print(header)
        print(rule)
        for row in rows:
            size = "x".join(map(str, row["default_size"]))
            line = f"| {row['name']} | {row['task']} | {row['paper']} | {size} | {'yes' if row['realtime'] else 'no'} |"
            if args.details:
                line += f" {row['parameters'] / 1e6:.3f} | {row['gflops']:.3f} |"
            print(line)
    else:
        for row in rows:
            extra = f"  {row['parameters'] / 1e6:.3f} M params  {row['gflops']:.2f} GFLOPs" if args.details else ""
            print(f"{row['name']:<16} {row['task']:<9} {row['paper']:<18}{extra}")
    return 0


def _cmd_predict(args) -> int:
    from segcore.image import mask_to_image, read_image, write_image_atomic
    from segcore.inference import Segmenter

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise SegcoreError(f"{out}: masks are written as PNG; give an --out path ending in .png")
    image = read_image(args.image)
    segmenter = Segmenter.from_pretrained(args.model, device=args.device)
    prediction = segmenter.predict(image)
    if segmenter.num_classes == 1:
        grey = np.clip(np.rint(prediction.probabilities[0] * 255.0), 0, 255).astype(np.uint8)
        mask = Image.fromarray(grey, mode="L")
    else:
        mask = mask_to_image(prediction.labels, segmenter.class_colors)
    write_image_atomic(mask, out)
    if args.probabilities:
        probabilities_path = Path(args.probabilities)
        if probabilities_path.suffix != ".npy":
            raise SegcoreError(f"{probabilities_path}: probabilities are written as .npy; use a path ending in .npy")
        temporary = probabilities_path.with_name(f".{probabilities_path.name}.tmp.npy")
        np.save(temporary, prediction.probabilities)
        temporary.replace(probabilities_path)
    print(f"{out}: {image.shape[1]}x{image.shape[0]} mask, {prediction.latency_ms:.1f} ms on {segmenter.device}")
    return 0


def _cmd_export(args) -> int:
    from segcore.export import export_model

    size = tuple(args.size) if args.size else None
    summary = export_model(args.model, args.out, input_size=size, batch_size=args.batch)
    print(f"{summary['path']}: {summary['architecture']} exported for input {summary['input_shape']} "
          f"(max abs difference from the model {summary['max_abs_error']:.2e})")
    return 0


def _cmd_not_yet(args) -> int:
    print(f"python -m segcore {args.command}: not implemented yet (issue {NOT_YET[args.command]})", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segcore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="list registered models")
    listing.add_argument("--task", choices=["semantic", "portrait", "saliency"])
    listing.add_argument("--details", action="store_true", help="also build each model: parameters and GFLOPs")
    listing.add_argument("--markdown", action="store_true", help="print a Markdown table (for docs/models.md)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_cmd_list)

    predict = commands.add_parser("predict", help="segment an image with a saved model")
    predict.add_argument("image", help="input image file")
    predict.add_argument("--model", required=True, help="saved model folder or Hugging Face Hub repo id")
    predict.add_argument("--out", required=True, help="output mask PNG (class indices, coloured palette)")
    predict.add_argument("--probabilities", help="also write class probabilities (C, H, W) to this .npy file")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    predict.set_defaults(handler=_cmd_predict)

    export = commands.add_parser("export", help="export a saved model to a torch.export program (.pt2)")
    export.add_argument("--model", required=True, help="saved model folder or Hugging Face Hub repo id")
    export.add_argument("--out", required=True, help="output .pt2 file")
    export.add_argument("--size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="input size (default: config)")
    export.add_argument("--batch", type=int, default=1, help="batch size of the exported program")
    export.set_defaults(handler=_cmd_export)

    for name, help_text in [("train", "train a model from a recipe"), ("eval", "evaluate a model on a dataset"),
                            ("bench", "benchmark models against peers")]:
        command = commands.add_parser(name, help=f"{help_text} (issue {NOT_YET[name]})")
        command.add_argument("rest", nargs=argparse.REMAINDER)
        command.set_defaults(handler=_cmd_not_yet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SegcoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # unknown model names and bad arguments from the registry
        print(f"error: {error}", file=sys.stderr)
        return 1
