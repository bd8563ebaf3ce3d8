"""A TCP proxy that tests can cut and restore, to make the database disappear for real.

Modelled on psycopg's ``tests/fix_proxy.py``: while stopped, existing connections are closed and
new ones are refused, exactly what a crashed or unreachable server looks like to the client.
"""

from __future__ import annotations

import asyncio
import contextlib

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ioc.core.settings import Settings


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def pause(self) -> None:
        """Hold every byte in both directions while connections stay open: a half-open link,
        which looks alive to both ends until a timeout notices."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(dst)
            with contextlib.suppress(Exception):
                dst.transport.abort()


async def database_behind_proxy(settings: Settings) -> tuple[TcpProxy, Settings]:
    """A started proxy in front of the settings' database, and settings that go through it."""
    url = settings.database_url or ""
    real = conninfo_to_dict(url)
    proxy = TcpProxy(str(real.get("host") or "127.0.0.1"), int(real.get("port") or 5432))
    await proxy.start()
    proxied = settings.model_copy(
        update={"database_url": make_conninfo(url, host="127.0.0.1", port=proxy.port)}
    )
    return proxy, proxied
