"""What every worker does around its handler: decode, deduplicate, retry, fail clearly, publish, then commit.

The subscriber's ack policy commits the offset only when this returns, so every effect (rows, vectors,
published events) is durable before the message is acknowledged (at-least-once). Effects are idempotent,
so a redelivery is harmless, and events already applied are skipped outright.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx
import structlog
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from shared import tracing
from shared.broker import publish, publish_dead_letter
from shared.db import deliveries as delivery_log
from shared.db import inbox, jobs, outbox, sources
from shared.db.deliveries import Delivery
from shared.errors import PermanentError, TransientError
from shared.events.models import DeadLetter, Envelope, SourceFailed, SourceRef, SourceUploaded
from shared.events.parts import clean_text
from shared.metrics import PipelineMetrics

E = TypeVar("E", bound=Envelope)
Handler = Callable[[E], Awaitable[Sequence[Envelope]]]
BatchResult = Sequence[tuple[E, Sequence[Envelope] | PermanentError]]
BatchHandler = Callable[[Sequence[E]], Awaitable[BatchResult[E]]]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down or restarting
    httpx.TransportError,
    KafkaError,
)
"""A server is down or busy: retry, never fail the source for it."""

PAYLOAD_EXCERPT_CHARS = 2000
log = structlog.get_logger("worker")


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass
class Worker:
    """The runner shared by every service; one per process, built in the service's lifespan."""

    service: str
    broker: KafkaBroker
    pool: asyncpg.Pool
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    max_deliveries: int = 5
    """Deliveries of a message that do not end in a commit (transient failures, or the process dying) before
    it is given up; counted in PostgreSQL (message_deliveries), so across processes and restarts."""
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics.detached)
    """Where the runner records stage durations, waits, retries, failures and dead letters."""

    async def handle(self, record: ConsumerRecord[Any, Any], model: type[E], handler: Handler[E]) -> None:
        """Handle one message with a single-event handler; an escaping error leaves it uncommitted."""
        begun: list[int] = []
        try:
            begun = await self._with_retries(lambda: self._begin([record]))
            if begun[0] > 1:
                self.metrics.redeliveries.labels(service=self.service).inc()
            if begun[0] > self.max_deliveries:
                await self._give_up_unfinished(record, model, begun[0] - 1)
            else:
                await self._handle(record, model, handler)
        except TRANSIENT_ERRORS as error:
            if not await self._budget_spent([record], begun, model, error):
                log.error("message_not_committed", error_type=type(error).__name__, error=str(error)[:300])
                raise
        except Exception as error:
            # A bug in our own failure path must not become a redelivery loop: park the message and move on.
            log.exception("message_dead_lettered", error_type=type(error).__name__)
            await self._dead_letter(record, "internal_error", f"{type(error).__name__}: {error}")
        await self._with_retries(lambda: self._finish([record]))  # reached only when the offset is committed

    async def handle_batch(
        self, records: Sequence[ConsumerRecord[Any, Any]], model: type[E], handler: BatchHandler[E]
    ) -> None:
        """Handle a batch of messages with a batch handler; one bad event never fails the others."""
        begun: list[int] = []
        try:
            begun = await self._with_retries(lambda: self._begin(records))
            redelivered = sum(1 for count in begun if count > 1)
            if redelivered:
                self.metrics.redeliveries.labels(service=self.service).inc(redelivered)
            if max(begun) > 1:
                # An earlier delivery of this batch did not end in a commit (its process may have died on one
                # of them): one message at a time, so a message that takes the worker down is found and given
                # up, and the others go through.
                log.warning("batch_isolated", records=len(records), deliveries=max(begun))
                for record in records:
                    await self._handle_alone(record, model, handler)
            else:
                await self._handle_batch(records, model, handler)
        except TRANSIENT_ERRORS as error:
            if not await self._budget_spent(records, begun, model, error):
                log.error(
                    "batch_not_committed",
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                    records=len(records),
                )
                raise
        except Exception as error:
            log.exception("batch_dead_lettered", error_type=type(error).__name__, records=len(records))
            for record in records:
                await self._dead_letter(record, "internal_error", f"{type(error).__name__}: {error}")
        await self._with_retries(lambda: self._finish(records))  # reached only when the offsets are committed

    async def _handle_alone(
        self, record: ConsumerRecord[Any, Any], model: type[E], handler: BatchHandler[E]
    ) -> None:
        """One message of a cut-short batch, on its own; given up once it has cut short too many attempts."""
        attempts = await self._with_retries(
            lambda: delivery_log.begin_solo_attempt(
                self.pool, consumer=self.service, message=_delivery(record)
            )
        )
        if attempts > self.max_deliveries:
            await self._give_up_unfinished(record, model, attempts - 1)
        else:
            await self._handle_batch([record], model, handler)
        await self._with_retries(lambda: self._finish([record]))

    async def _begin(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[int]:
        return await delivery_log.begin(
            self.pool, consumer=self.service, messages=[_delivery(r) for r in records]
        )

    async def _finish(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await delivery_log.finish(self.pool, consumer=self.service, messages=[_delivery(r) for r in records])

    async def _give_up_unfinished(
        self, record: ConsumerRecord[Any, Any], model: type[E], cut_short: int
    ) -> None:
        """A message none of whose last deliveries ended (the process handling it died, or gave up transiently
        before dying): it cannot be allowed to crash-loop the worker; fail its source and dead-letter it."""
        event = _try_decode(record, model)
        if event is not None and await self._with_retries(lambda: self._seen(event)):
            return  # applied already (the process died after its effects, before the commit)
        code = "worker_crashed"
        reason = (
            f"{cut_short} deliveries of this message to the {self.service} worker never finished (the process was "
            "killed, ran out of memory or crashed while handling it); given up so it cannot crash-loop the worker: "
            "replay it from the dead-letter topic once the cause is fixed"
        )
        log.error("message_given_up_after_crashes", error_code=code, deliveries=cut_short)
        if event is not None:
            with self._bound(event), tracing.stage_span(self.service, event, record) as span:
                given_up = PermanentError(code, reason)
                tracing.mark_failed(span, code)
                await self._publish(await self._with_retries(lambda: self._fail(event, given_up)))
        await self._dead_letter(record, code, reason, attempts=cut_short)

    async def _handle(self, record: ConsumerRecord[Any, Any], model: type[E], handler: Handler[E]) -> None:
        # Every step that touches PostgreSQL or Kafka retries like the handler does: a delivery that failed
        # in milliseconds during an outage would otherwise spend the whole delivery budget before it ends.
        started = time.monotonic()
        waited_ms = _waited_ms(record)
        event = await self._with_retries(lambda: self._decode(record, model))
        if event is not None and _replayed(record):
            await self._with_retries(lambda: self._reopen(event))
        if event is None or await self._with_retries(lambda: self._seen(event)):
            return
        self.metrics.waited(self.service, event.occurred_at)
        failed = False
        with self._bound(event), tracing.stage_span(self.service, event, record) as span:
            try:
                outgoing = await self._with_retries(lambda: handler(event))
            except PermanentError as error:
                refusal = error  # the name `error` is unbound when the except block ends
                failed = True
                tracing.mark_failed(span, refusal.code)
                outgoing = await self._with_retries(lambda: self._fail(event, refusal))
            except Exception as error:
                if isinstance(error, TRANSIENT_ERRORS):
                    raise  # the retry budget is spent: do not commit; Kafka redelivers
                log.exception("handler_crashed", error_type=type(error).__name__)
                crash = PermanentError("internal_error", f"{type(error).__name__}: {error}")
                failed = True
                tracing.mark_failed(span, crash.code)
                outgoing = await self._with_retries(lambda: self._fail(event, crash))
            await self._publish(outgoing)
            await self._with_retries(lambda: self._applied([event.event_id]))
            self.metrics.handled(self.service, time.monotonic() - started, failed=failed)
            log.info(
                "event_processed",
                emitted=[e.event_type for e in outgoing],
                busy_ms=round((time.monotonic() - started) * 1000, 1),
                waited_ms=waited_ms,
            )

    async def _handle_batch(
        self, records: Sequence[ConsumerRecord[Any, Any]], model: type[E], handler: BatchHandler[E]
    ) -> None:
        started = time.monotonic()
        waited_ms = max((_waited_ms(r) for r in records), default=None, key=lambda w: w or 0.0)
        events: list[E] = []
        origins: dict[uuid.UUID, ConsumerRecord[Any, Any]] = {}
        for record in records:
            event = await self._with_retries(lambda record=record: self._decode(record, model))  # type: ignore[misc]
            if event is None:
                continue
            if _replayed(record):
                await self._with_retries(lambda event=event: self._reopen(event))  # type: ignore[misc]
            if not await self._with_retries(lambda event=event: self._seen(event)):  # type: ignore[misc]
                events.append(event)
                origins[event.event_id] = record
        if not events:
            return
        for event in events:
            self.metrics.waited(self.service, event.occurred_at)
        # One span per event, each in its own upload's trace (a batch mixes sources).
        spans = {
            e.event_id: tracing.start_stage_span(self.service, e, origins[e.event_id], batch_size=len(events))
            for e in events
        }
        try:
            try:
                results = await self._with_retries(lambda: handler(events))
            except PermanentError:
                results = await self._one_by_one(events, handler)
            except Exception as error:
                if isinstance(error, TRANSIENT_ERRORS):
                    raise
                log.exception("batch_handler_crashed", error_type=type(error).__name__, events=len(events))
                results = await self._one_by_one(events, handler)
            for event, result in results:
                span = spans.get(event.event_id)
                with self._bound(event), tracing.active(span):
                    if isinstance(result, PermanentError):
                        tracing.mark_failed(span, result.code)
                        outgoing = await self._with_retries(
                            lambda event=event, result=result: self._fail(event, result)  # type: ignore[misc]
                        )
                    else:
                        outgoing = result
                    await self._publish(outgoing)
        except BaseException as error:
            for span in spans.values():
                tracing.end(span, error=error)
            raise
        for span in spans.values():
            tracing.end(span)
        await self._with_retries(lambda: self._applied([e.event_id for e in events]))
        failed = any(isinstance(result, PermanentError) for _, result in results)
        self.metrics.handled(self.service, time.monotonic() - started, failed=failed)
        log.info(
            "batch_processed",
            events=len(events),
            records=len(records),
            busy_ms=round((time.monotonic() - started) * 1000, 1),
            waited_ms=waited_ms,
        )

    async def _one_by_one(self, events: Sequence[E], handler: BatchHandler[E]) -> list[tuple[E, Any]]:
        """Isolate the event that broke a batch by handling each alone."""
        results: list[tuple[E, Any]] = []
        for event in events:
            try:
                results.extend(await self._with_retries(lambda event=event: handler([event])))  # type: ignore[misc]
            except PermanentError as error:
                results.append((event, error))
            except Exception as error:
                if isinstance(error, TRANSIENT_ERRORS):
                    raise
                log.exception(
                    "handler_crashed", event_id=str(event.event_id), error_type=type(error).__name__
                )
                results.append((event, PermanentError("internal_error", f"{type(error).__name__}: {error}")))
        return results

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Retry transient failures with exponential backoff; re-raise once the budget is spent."""
        for attempt, delay in enumerate((*self.retry_delays, None), start=1):
            try:
                return await call()
            except TRANSIENT_ERRORS as error:
                if delay is None:
                    log.error(
                        "transient_error_budget_spent", attempts=attempt, error_type=type(error).__name__
                    )
                    raise
                log.warning("transient_error_retrying", attempt=attempt, delay=delay, error=str(error)[:200])
                self.metrics.retries.labels(service=self.service).inc()
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _decode(self, record: ConsumerRecord[Any, Any], model: type[E]) -> E | None:
        """The event of a message, or None after storing why it was refused and dead-lettering it."""
        try:
            return model.model_validate_json(record.value or b"")
        except ValidationError as error:
            await self._reject(record, "invalid_event", f"not a valid {model.__name__}: {_reason(error)}")
            return None
        except ValueError as error:  # not even text (invalid UTF-8): as undecodable as bad JSON
            await self._reject(record, "invalid_event", f"not a valid {model.__name__}: {error}")
            return None

    async def _reject(self, record: ConsumerRecord[Any, Any], code: str, reason: str) -> None:
        """Store the refusal, publish the original bytes to the dead-letter topic, and a failure if we can."""
        raw: bytes = record.value or b""
        key = record.key.decode("utf-8", "replace") if record.key else None
        event_id = _uuid_field(raw, "event_id")
        log.warning("message_rejected", error_code=code, reason=reason[:300], event_id=str(event_id))
        await inbox.record_rejection(
            self.pool,
            consumer=self.service,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=key,
            event_id=event_id,
            code=code,
            reason=reason,
            # PostgreSQL text cannot hold NUL: hostile bytes are stored cleaned (the dead letter keeps them all).
            payload_excerpt=clean_text(raw[:PAYLOAD_EXCERPT_CHARS].decode("utf-8", "replace")),
        )
        await self._dead_letter(record, code, reason)
        source_id = _uuid(key)
        if source_id is not None and record.topic != SourceUploaded.TOPIC:
            # A broken internal event still belongs to a known source: fail that source, not just the message.
            await jobs.fail_job(self.pool, source_id=source_id, stage=self.service, code=code, reason=reason)
        failure = SourceFailed(
            correlation_id=event_id or uuid.uuid4(),
            causation_id=event_id,
            producer=self.service,
            source_id=source_id,
            stage=self.service,
            error_code=code,
            reason=reason,
        )
        await publish(self.broker, failure)
        self.metrics.failed(self.service, code)

    async def _reopen(self, event: Envelope) -> None:
        """An operator replayed this dead letter: its failed source works again."""
        ref: SourceRef | None = getattr(event, "source", None)
        if ref is None:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if await jobs.reopen_job(conn, source_id=ref.source_id):
                await sources.reopen_status(conn, kind=ref.kind, source_id=ref.source_id)
                log.warning("source_reopened_by_replay", source_id=str(ref.source_id))

    async def _budget_spent(
        self,
        records: Sequence[ConsumerRecord[Any, Any]],
        counts: Sequence[int],
        model: type[E],
        error: BaseException,
    ) -> bool:
        """A delivery (the ``counts``-th of each message) failed transiently; once a message has used its
        budget, fail its source and dead-letter it. With no count (the database was down before one could be
        written) the message is never given up: it is redelivered.

        Returns True when the messages were given up (so they are committed), False to have them redelivered.
        """
        if not counts or max(counts) < self.max_deliveries:
            return False
        reason = f"still failing after {max(counts)} deliveries: {type(error).__name__}: {str(error)[:300]}"
        code = error.code if isinstance(error, TransientError) else "retries_exhausted"
        for record, attempts in zip(records, counts, strict=True):
            event = _try_decode(record, model)
            if event is not None:
                with self._bound(event):
                    given_up = PermanentError(code, reason)
                    await self._publish(
                        await self._with_retries(lambda e=event, g=given_up: self._fail(e, g))  # type: ignore[misc]
                    )
            await self._dead_letter(record, code, reason, attempts=attempts)
        log.error("delivery_budget_spent", error_code=code, records=len(records))
        return True

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], code: str, reason: str, attempts: int = 1
    ) -> None:
        """Publish the original bytes with the reason to the dead-letter topic."""
        await publish_dead_letter(
            self.broker,
            DeadLetter(
                consumer=self.service,
                original_topic=record.topic,
                original_partition=record.partition,
                original_offset=record.offset,
                original_key=record.key.decode("utf-8", "replace") if record.key else None,
                original_value_b64=base64.b64encode(record.value or b"").decode("ascii"),
                error_code=code,
                reason=reason[:2000],
                attempts=attempts,
            ),
        )
        self.metrics.dead_letters.labels(service=self.service, error_code=code).inc()

    async def _seen(self, event: Envelope) -> bool:
        """True for an event to skip: applied already, or about a source that has failed for good."""
        if await inbox.is_processed(self.pool, consumer=self.service, event_id=event.event_id):
            log.info("event_already_processed", event_id=str(event.event_id), event_type=event.event_type)
            return True
        ref: SourceRef | None = getattr(event, "source", None)
        if ref is None:
            return False
        state = await jobs.job_state(self.pool, source_id=ref.source_id)
        if state is not None and state[1] > ref.generation:
            # A reprocess started since: this event belongs to a run that no longer counts.
            log.info(
                "event_of_earlier_generation_skipped", event_id=str(event.event_id), generation=ref.generation
            )
            return True
        if state is not None and state[0] == "failed":
            # Other pieces of a failed source must not go on to write vectors nobody will see as complete.
            log.info(
                "event_of_failed_source_skipped", event_id=str(event.event_id), event_type=event.event_type
            )
            return True
        return False

    async def _fail(self, event: Envelope, error: PermanentError) -> list[Envelope]:
        """Record a permanent failure where an operator looks, and announce it."""
        log.warning("source_failed", error_code=error.code, reason=error.reason[:300])
        ref: SourceRef | None = getattr(event, "source", None)
        if ref is not None:
            async with self.pool.acquire() as conn, conn.transaction():
                await jobs.fail_job(
                    conn, source_id=ref.source_id, stage=self.service, code=error.code, reason=error.reason
                )
                await sources.set_status(conn, kind=ref.kind, source_id=ref.source_id, status="failed")
            source_id: uuid.UUID | None = ref.source_id
        else:
            source_id = event.source_id if isinstance(event, SourceUploaded) else None
            await inbox.record_rejection(
                self.pool,
                consumer=self.service,
                topic=event.TOPIC,
                partition=None,
                offset=None,
                key=str(source_id) if source_id else None,
                event_id=event.event_id,
                code=error.code,
                reason=error.reason,
                payload_excerpt=None,
            )
        self.metrics.failed(self.service, error.code)
        return [
            SourceFailed(
                **event.follow(f"SourceFailed/{self.service}", producer=self.service),
                source_id=source_id,
                source=ref,
                stage=self.service,
                error_code=error.code,
                reason=error.reason,
            )
        ]

    async def _publish(self, events: Sequence[Envelope]) -> None:
        # A stage's input is kept in PostgreSQL before the broker sees it: what the broker loses, the
        # reconciler publishes again (shared.db.outbox, services/reconciler).
        events = [tracing.stamp(event) for event in events]  # the trace goes on, also from the outbox
        kept = [entry for entry in map(outbox.entry_for, events) if entry is not None]
        if kept:
            await self._with_retries(lambda: outbox.record(self.pool, kept))
        for event in events:
            await self._with_retries(lambda event=event: publish(self.broker, event))  # type: ignore[misc]

    async def _applied(self, event_ids: list[uuid.UUID]) -> None:
        """Remember that this worker applied these events, and drop them from the outbox: nothing to re-drive."""
        async with self.pool.acquire() as conn, conn.transaction():
            await inbox.mark_processed(conn, consumer=self.service, event_ids=event_ids)
            await outbox.forget(conn, consumer=self.service, event_ids=event_ids)

    def _bound(self, event: Envelope) -> Any:
        ref: SourceRef | None = getattr(event, "source", None)
        source_id = ref.source_id if ref else getattr(event, "source_id", None)
        return structlog.contextvars.bound_contextvars(
            event_id=str(event.event_id),
            event_type=event.event_type,
            correlation_id=str(event.correlation_id),
            source_id=str(source_id) if source_id else None,
        )


def _replayed(record: ConsumerRecord[Any, Any]) -> bool:
    return any(key == "replayed_from" for key, _ in record.headers or ())


def _delivery(record: ConsumerRecord[Any, Any]) -> Delivery:
    digest = hashlib.sha256(record.key or b"")
    digest.update(b"\0")
    digest.update(record.value or b"")
    return Delivery(record.topic, record.partition, record.offset, digest.hexdigest())


def _try_decode(record: ConsumerRecord[Any, Any], model: type[E]) -> E | None:
    try:
        return model.model_validate_json(record.value or b"")
    except ValueError:  # ValidationError included
        return None


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


def _uuid_field(raw: bytes, field: str) -> uuid.UUID | None:
    """A UUID field of a JSON body that failed validation, if it is there at all."""
    import json

    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return _uuid(body.get(field)) if isinstance(body, dict) and isinstance(body.get(field), str) else None


def _waited_ms(record: ConsumerRecord[Any, Any]) -> float | None:
    """How long a message sat in its topic before this delivery began (from the record's own timestamp)."""
    stamp = float(record.timestamp or 0)
    if stamp <= 0:
        return None
    return round(max(0.0, time.time() * 1000 - stamp), 1)
