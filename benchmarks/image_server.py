"""A fast image server on loopback for the fetch benchmark: the corpus's JPEGs at /img/N.jpg, on
127.0.0.1 .. 127.0.0.HOSTS (one "domain" each, same port), run in its own process so that it does
not share the measured process's interpreter. Prints the port, then serves until killed.

Usage: python image_server.py IMAGE_DIR HOSTS
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web


def loopback(number: int) -> str:
    """The number-th loopback address, from 127.0.0.1 (all of 127/8 reaches this machine)."""
    return f"127.0.{number // 256}.{number % 256}"


async def main(directory: Path, hosts: int) -> None:
    images = [p.read_bytes() for p in sorted(directory.glob("*.jpg"))]

    async def image(request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        if number % 50 == 49:  # a few dead links, as in any crawl
            return web.Response(status=404, text="gone")
        return web.Response(body=images[number % len(images)], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/img/{number}.jpg", image)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    first = web.TCPSite(runner, loopback(1), 0, backlog=1024)
    await first.start()
    port = first._server.sockets[0].getsockname()[1]
    for host in range(2, hosts + 1):
        await web.TCPSite(runner, loopback(host), port, backlog=1024).start()
    print(port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
