"""Run localstripe on 127.0.0.1 with the fidelity layer: ``python -m devtools.fakestripe --port 0``.

Prints ``listening on http://127.0.0.1:PORT`` once it accepts connections (``--port 0`` picks a free
port) and, with ``--port-file``, writes the port there too. The store is in memory unless
``--store FILE`` names a file that keeps it across restarts (the demo does that).
GPL-3.0-or-later, like localstripe: see LICENSE-NOTICE.md.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from devtools.fakestripe import fidelity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--store", type=Path, help="keep the fake server's data in this file")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args()

    fidelity.configure_store(args.store)
    app = fidelity.build_app()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]

    from aiohttp import web

    async def announce(_app: web.Application) -> None:
        if args.port_file:
            args.port_file.write_text(str(port))
        print(f"listening on http://127.0.0.1:{port}", flush=True)

    app.on_startup.append(announce)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    web.run_app(app, sock=sock, print=None, access_log=logging.getLogger("aiohttp.access") if args.verbose else None)


if __name__ == "__main__":
    main()
