"""Entry point: `python app.py [--host 127.0.0.1] [--port 7860] [--share] [--admin]` serves the segcore Gradio app.

It works offline with the bundled weights (assets/weights) and example images (assets/examples); fine-tuning jobs
and their models live under runs/ and survive a restart.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segcore app (Gradio)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--admin", action="store_true",
                        help="every visitor and API client sees and may cancel every fine-tuning job (default: only "
                             "their own; SEGCORE_ADMIN=1 does the same)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from app import gradio_ui

    gradio_ui.launch(args.host, args.port, args.share, block=True, admin=args.admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
