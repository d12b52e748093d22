"""Serves the drawing page (web/) with a model server, for a browser.

Starts model_server.py with --rest_api_enable_cors_support=true (the page
calls it from another origin), serves web/ on a local port and prints the
page's address once the model server answers. Ctrl+C stops both. With
--server, no model server is started: the page calls that one, for example
TensorFlow Serving in Docker, which needs the same flag.

Typical usage:
    python code/web_demo.py
    python code/web_demo.py --page_port 8080 --rest_api_port 9000
    python code/web_demo.py --server http://localhost:8501
"""

import argparse
import signal
import sys
import threading
from pathlib import Path

from mnist_serving import cli, config, savedmodel, web
from mnist_serving.server_process import ModelServerProcess

PROGRAM = "web_demo.py"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=__doc__.split("\n\n")[0], formatter_class=cli.HelpFormatter
    )
    parser.add_argument(
        "--page_port",
        type=int,
        default=config.WEB_PAGE_PORT,
        metavar="PORT",
        help="port of the page (0: a free one)",
    )
    parser.add_argument(
        "--host",
        default=config.REST_HOST,
        help="address of the page and the model server (0.0.0.0: the whole network)",
    )
    parser.add_argument(
        "--server",
        type=cli.server_url,
        metavar="URL",
        help="a running model server to use instead of starting model_server.py",
    )
    parser.add_argument(
        "--rest_api_port",
        type=int,
        default=config.REST_PORT,
        metavar="PORT",
        help="port of the model server started (0: a free one)",
    )
    parser.add_argument(
        "--model_base_path",
        type=Path,
        default=config.DEFAULT_EXPORT_BASE,
        metavar="PATH",
        help="the exported versions that model server serves",
    )
    parser.add_argument(
        "--model_name", default=config.MODEL_NAME, metavar="NAME", help="the served model"
    )
    return parser.parse_args(argv)


def _stop(signal_number, frame):
    """SIGTERM and SIGHUP (a closed terminal) stop both servers, as Ctrl+C does."""
    raise KeyboardInterrupt


def main(argv=None):
    """Serves until Ctrl+C (SIGINT) or SIGTERM, or until the model server stops."""
    args = parse_arguments(argv)
    if args.server is None and not savedmodel.version_numbers(args.model_base_path):
        print(
            f"{PROGRAM}: error: no exported model in {args.model_base_path}: "
            "run 'make train export' (or 'make demo') first",
            file=sys.stderr,
        )
        return 1
    try:
        page = web.PageServer(args.host, args.page_port)
    except OSError as error:
        reason = error.strerror or str(error)
        print(
            f"{PROGRAM}: error: cannot serve the page on {args.host}:{args.page_port}: "
            f"{reason} (choose another --page_port)",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    model_server = None
    try:
        server_url = args.server
        if server_url is None:
            model_server = ModelServerProcess(
                [
                    f"--rest_api_host={args.host}",
                    f"--rest_api_port={args.rest_api_port}",
                    # The page speaks REST only: gRPC on any free port, not 8500.
                    "--port=0",
                    f"--model_name={args.model_name}",
                    f"--model_base_path={args.model_base_path}",
                    "--rest_api_enable_cors_support=true",
                ],
                echo=sys.stderr,
                new_session=True,
            )
            port = model_server.wait_until_ready()
            if port is None:
                status = model_server.process.wait()
                print(
                    f"{PROGRAM}: error: model_server.py stopped with status {status} "
                    "(its log is above)",
                    file=sys.stderr,
                )
                return 1
            server_url = web.local_url(args.host, port)
        url = web.page_url(args.host, page.port, server_url, args.model_name)
        print(f"\nDraw a digit at {url}  (Ctrl+C stops)\n", flush=True)
        if model_server is None:
            threading.Event().wait()  # Until Ctrl+C or SIGTERM.
        status = model_server.process.wait()
        print(f"{PROGRAM}: error: model_server.py stopped with status {status}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROGRAM}: stopping", file=sys.stderr)
        return 0
    finally:
        if model_server is not None:
            model_server.stop()
        page.close()


if __name__ == "__main__":
    sys.exit(main())
