"""Entry point: `python app.py [--host 127.0.0.1] [--port 7860] [--share]`.

The Gradio app lands with issue 7; until then this prints the catalog (registered architectures and shipped
trained models) and exits 0, so the README's first command runs on a fresh machine.
"""

from __future__ import annotations

import argparse
import sys

from app import services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segcore app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true")
    parser.parse_args(argv)
    print("segcore app: the Gradio UI is not built yet (issue 7). Catalog:")
    print("Architectures:")
    for info in services.architectures():
        print(f"  {info['name']:<16} {info['task']:<9} {info['paper']}")
    trained = services.trained_models()
    print("Trained models:" + ("" if trained else " none shipped yet (issue 6)"))
    for entry in trained:
        print(f"  {entry.name:<24} {entry.architecture:<14} {entry.task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
