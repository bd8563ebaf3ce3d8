"""Shared subscriptions (``$share/<group>/<filter>``, MQTT v5 §4.8.2) on a private Mosquitto:
two members of one group split the messages, each message reaches exactly one of them, a plain
subscriber beside them gets every message, and a member that leaves stops getting any."""

from __future__ import annotations

from pathlib import Path

from ioc.embedded.ports import LOOPBACK, free_port
from ioc.provision.accounts import hash_password
from mqttclient import Client, Message
from tests.test_provision import mosquitto

SHARED = "$share/workers/share/t/#"


async def _until_marker(client: Client, marker: str) -> list[bytes]:
    """Everything ``client`` gets before a message on ``marker``. Mosquitto sends one client's
    messages in the order it took them in, so a copy published before the marker arrives
    before it: once the marker is in, nothing published earlier is still on its way."""
    got: list[bytes] = []
    while True:
        m: Message = await client.next_message()
        if m.topic == marker:
            return got
        got.append(m.payload)


async def test_two_members_of_a_shared_subscription_split_the_messages(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text(f"u:{hash_password('pw')}\n")
    (tmp_path / "acl").write_text("user u\ntopic readwrite share/#\ntopic readwrite mark/#\n")
    port = free_port()

    def client(client_id: str) -> Client:
        return Client(
            LOOPBACK,
            port,
            client_id=client_id,
            username="u",
            password="pw",
            clean_start=True,
            session_expiry_s=0,
        )

    with mosquitto(tmp_path, f"listener {port} {LOOPBACK}", port):
        async with client("a") as a, client("b") as b, client("all") as all_, client("p") as p:
            for member, marker in ((a, "mark/a"), (b, "mark/b")):
                assert await member.subscribe(SHARED, qos=1) == 1
                assert await member.subscribe(marker, qos=1) == 1
            assert await all_.subscribe("share/t/#", qos=1) == 1
            assert await all_.subscribe("mark/all", qos=1) == 1

            sent = [f"m{i}".encode() for i in range(200)]
            for payload in sent:
                await p.publish("share/t/x", payload, qos=1)
            for marker in ("mark/a", "mark/b", "mark/all"):
                await p.publish(marker, b"", qos=1)
            got_a = await _until_marker(a, "mark/a")
            got_b = await _until_marker(b, "mark/b")
            # each message went to exactly one member, and both took a share
            assert sorted(got_a + got_b) == sorted(sent)
            assert got_a and got_b
            # each member got its share in publish order
            assert got_a == [m for m in sent if m in set(got_a)]
            # a plain subscription beside the group gets every message, in order
            assert await _until_marker(all_, "mark/all") == sent

        # b leaves (its session ends with the connection): the group is a alone now
        async with client("a") as a, client("p") as p:
            assert await a.subscribe(SHARED, qos=1) == 1
            assert await a.subscribe("mark/a", qos=1) == 1
            async with client("b") as b:
                assert await b.subscribe(SHARED, qos=1) == 1
            later = [f"n{i}".encode() for i in range(50)]
            for payload in later:
                await p.publish("share/t/y", payload, qos=1)
            await p.publish("mark/a", b"", qos=1)
            assert await _until_marker(a, "mark/a") == later
