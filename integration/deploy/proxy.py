"""A small TCP proxy between Airflow and the local PanDA server: the network path a test can cut.

    python -m integration.deploy.proxy --listen PORT --target PORT

Forwards every connection on 127.0.0.1:LISTEN to 127.0.0.1:TARGET. SIGUSR1 cuts the path: the
listening socket is closed (new connections are refused) and every open connection is dropped,
as when a router or load balancer in front of the server restarts; SIGUSR2 opens it again. Each
change is logged with its wall time on stdout, so a test can tell when the outage began and ended.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

HOST = "127.0.0.1"


class Proxy:
    def __init__(self, listen: int, target: int) -> None:
        self.listen, self.target = listen, target
        self.server: asyncio.base_events.Server | None = None
        self.streams: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, HOST, self.listen, reuse_address=True)
            say(f"open {HOST}:{self.listen} -> {HOST}:{self.target}")

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.streams):
            writer.transport.abort()
        self.streams.clear()
        say("cut")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target)
        except OSError:
            writer.transport.abort()
            return
        self.streams.update((writer, up_writer))
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self.streams.discard(w)
                w.transport.abort()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.transport.is_closing():
            writer.transport.abort()


def say(message: str) -> None:
    print(f"{time.time():.3f} {message}", flush=True)


async def main(listen: int, target: int) -> None:
    proxy = Proxy(listen, target)
    await proxy.open()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: loop.create_task(proxy.cut()))
    loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(proxy.open()))
    loop.add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.target))
    sys.exit(0)
