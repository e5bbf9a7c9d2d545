"""The embedded servers really serve: a Kafka round trip, Chroma's heartbeat, PostgreSQL stop and restart."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.devstack.servers import (
    ServerProcess,
    is_running,
    remove_postgres,
    start_postgres,
    stop_postgres,
)

pytestmark = pytest.mark.integration


def _detached(server: ServerProcess) -> bool:
    """True if the server leads its own session (it survives the process that started it)."""
    return os.getsid(server.pid) == server.pid != os.getsid(0)


async def test_broker_round_trip(kafka_broker: ServerProcess) -> None:
    """A keyed message with a header produced to a new topic is consumed back by a fresh group."""
    assert _detached(kafka_broker)
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.url)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1", headers=[("kind", b"test")])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.url,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",  # Tansu's "latest" is wrong (field notes)
        session_timeout_ms=3000,  # Tansu answers a first JoinGroup after about half the session timeout
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"k1", b"hello")
    assert list(message.headers) == [("kind", b"test")]


async def test_chroma_heartbeat(chroma_server: ServerProcess) -> None:
    """Chroma answers its v2 heartbeat."""
    from tests.servers import CURRENT

    assert _detached(CURRENT.get("chroma", chroma_server))  # another test may have restarted it
    async with httpx.AsyncClient(base_url=chroma_server.url, timeout=10) as client:
        response = await client.get("/api/v2/heartbeat")
    assert response.status_code == 200
    assert "nanosecond heartbeat" in response.json()


def _accepts(port: int) -> bool:
    """True if 127.0.0.1:port accepts TCP connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_postgres_restarts_on_the_same_port_with_its_data(tmp_path: Path) -> None:
    """A stopped cluster comes back on the same port with its rows; starting a running one is a no-op."""
    server = start_postgres(tmp_path / "pg")
    try:
        assert _detached(server)
        assert start_postgres(tmp_path / "pg") == server  # idempotent while running
        conn = await asyncpg.connect(server.url)
        try:
            await conn.execute("CREATE TABLE kept (id INT PRIMARY KEY, note TEXT)")
            await conn.execute("INSERT INTO kept VALUES (1, 'survives a restart')")
        finally:
            await conn.close()

        stop_postgres(server)
        assert not is_running(server.pid)
        assert not _accepts(server.port)
        stop_postgres(server)  # already stopped: a no-op

        again = start_postgres(tmp_path / "pg", port=server.port)
        assert (again.port, again.url, again.data_dir) == (server.port, server.url, server.data_dir)
        assert again.pid != server.pid and is_running(again.pid)
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == "survives a restart"
        finally:
            await conn.close()
    finally:
        remove_postgres(server)
    assert not server.data_dir.exists()


def test_purging_a_stopped_stack_deletes_its_data_and_nothing_else(tmp_path: Path) -> None:
    """`lmgpa dev down` then `lmgpa dev down --purge`: the second finds no running stack but still deletes the
    stack's data (its cluster, wherever home/postgres points); a folder without a stack's cluster is left alone."""
    from shared.devstack import stack

    home = tmp_path / "stack"
    server = start_postgres(home)
    (home / "logs").mkdir()
    (home / "logs" / "upload-0.log").write_text("kept until the purge\n")
    stop_postgres(server)
    base = (home / "postgres").resolve()
    assert base.is_dir() and stack.load_state(home) is None

    stranger = tmp_path / "not-a-stack"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert stack.down(stranger, purge=True) is False
    assert (stranger / "notes.txt").read_text() == "mine"
    assert stack.down(home, purge=False) is False and base.is_dir()  # without --purge: nothing to do

    assert stack.down(home, purge=True) is True
    assert not home.exists() and not base.exists()
