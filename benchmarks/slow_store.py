"""An S3 API on loopback (moto's server) behind a proxy that slows every download to RATE bytes/s
per connection: object storage as a worker sees it, a stream at a time. Runs in its own process so
that it does not share the measured process's interpreter. Prints "S3_PORT PROXY_PORT", then
serves until killed: uploads go to S3_PORT, the measured reads through PROXY_PORT.

Usage: python slow_store.py RATE
"""

from __future__ import annotations

import asyncio
import logging
import sys

from moto.server import ThreadedMotoServer

_CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
            if rate:
                await asyncio.sleep(len(data) / rate)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(rate: float) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    store = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    store.start()
    _, store_port = store.get_host_and_port()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", store_port)
        await asyncio.gather(_pipe(client_reader, server_writer, None), _pipe(server_reader, client_writer, rate))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(store_port, proxy.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1])))
