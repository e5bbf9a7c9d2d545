"""The transcription, OCR and textbook-chunking handlers with in-memory fakes of their ports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.chunking.handlers import BookInfo, RangeProgress, chunk_textbook, plan_textbook
from services.chunking.handlers import Limits as BookLimits
from services.ocr.handlers import PhotoText, extract_text
from services.transcription.handlers import Limits as AudioLimits
from services.transcription.handlers import PieceProgress, Plan, plan_transcription, transcribe
from shared.errors import PermanentError
from shared.events.models import (
    AudioPieceQueued,
    AudioUploaded,
    PhotoUploaded,
    SourceRef,
    TextbookPagesQueued,
    TextbookUploaded,
    TextExtracted,
    TextSegment,
)


def ref(kind: str) -> SourceRef:
    return SourceRef(
        source_id=uuid.uuid4(),
        kind=kind,
        user_id=uuid.uuid4(),
        class_id=uuid.uuid4(),  # type: ignore[arg-type]
        title="Week 5",
        created_at=datetime(2026, 10, 1, tzinfo=UTC),
    )


class Tracker:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def started(
        self, source_id: uuid.UUID, stage: str, *, units_total: int | None = None, unit: str | None = None
    ) -> None:
        self.calls.append(("started", stage, units_total, unit))

    async def progressed(
        self, source_id: uuid.UUID, stage: str, *, units_done: int, units_total: int | None = None
    ) -> None:
        self.calls.append(("progressed", stage, units_done, units_total))

    async def finished(
        self,
        source_id: uuid.UUID,
        stage: str,
        *,
        units_done: int | None = None,
        next_stage: str | None = None,
    ) -> None:
        self.calls.append(("finished", stage, units_done, next_stage))


# --------------------------------------------------------------------------------------------- transcription


class FakeAudio:
    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self.spans: list[tuple[float, float, list[int] | None]] = []

    async def plan(self, url: str) -> Plan:
        return self._plan

    async def transcribe(
        self, url: str, *, start_seconds: float, end_seconds: float, channels: list[int] | None
    ) -> list[TextSegment]:
        self.spans.append((start_seconds, end_seconds, channels))
        return [
            TextSegment(
                text=f"words from {start_seconds:.0f}",
                start_seconds=start_seconds + 1,
                end_seconds=start_seconds + 4,
            ),
            TextSegment(text="   ", start_seconds=start_seconds + 5, end_seconds=start_seconds + 6),
        ]


class FakeRecordings:
    def __init__(self) -> None:
        self.duration: float | None = None
        self.done: dict[int, int] = {}
        self.piece_count = 0

    async def started(self, source: SourceRef, *, duration_seconds: float) -> None:
        self.duration = duration_seconds

    async def piece_done(self, event: AudioPieceQueued, segments: Sequence[TextSegment]) -> PieceProgress:
        already = len(self.done) == event.piece_count
        self.done[event.piece_index] = round(event.end_seconds - event.start_seconds)
        complete = len(self.done) == event.piece_count and not already
        return PieceProgress(
            seconds_done=sum(self.done.values()), completed_now=complete, transcript="x" if complete else ""
        )


def audio_uploaded(source: SourceRef) -> AudioUploaded:
    eid = uuid.uuid4()
    return AudioUploaded(
        correlation_id=eid, causation_id=eid, producer="upload", source=source, storage_url="file:///s/a.m4a"
    )


async def test_a_recording_is_planned_into_pieces_with_its_speaker_channels() -> None:
    source = ref("audio")
    plan = Plan(
        duration_seconds=1500.0, pieces=((0.0, 598.2), (598.2, 1203.0), (1203.0, 1500.0)), channels=[0, 1]
    )
    recordings, tracker = FakeRecordings(), Tracker()
    event = audio_uploaded(source)
    out = await plan_transcription(
        event,
        audio=FakeAudio(plan),
        recordings=recordings,
        tracker=tracker,
        limits=AudioLimits(max_seconds=7200),
    )

    assert recordings.duration == 1500.0
    assert [type(e) for e in out] == [AudioPieceQueued] * 3
    pieces = [e for e in out if isinstance(e, AudioPieceQueued)]
    assert [(p.start_seconds, p.end_seconds) for p in pieces] == list(plan.pieces)
    assert {(p.piece_count, tuple(p.channels or ())) for p in pieces} == {(3, (0, 1))}
    assert len({p.event_id for p in pieces}) == 3
    again = await plan_transcription(
        event,
        audio=FakeAudio(plan),
        recordings=FakeRecordings(),
        tracker=Tracker(),
        limits=AudioLimits(max_seconds=7200),
    )
    # Planning the same event again gives the same events, ids included (only occurred_at differs).
    assert [e.model_dump(exclude={"occurred_at"}) for e in again] == [
        p.model_dump(exclude={"occurred_at"}) for p in pieces
    ]
    assert tracker.calls == [("started", "transcription", 1500, "seconds")]


async def test_a_recording_over_the_limit_fails_before_anything_is_written() -> None:
    recordings = FakeRecordings()
    plan = Plan(duration_seconds=9000.0, pieces=((0.0, 9000.0),), channels=None)
    with pytest.raises(PermanentError) as failure:
        await plan_transcription(
            audio_uploaded(ref("audio")),
            audio=FakeAudio(plan),
            recordings=recordings,
            tracker=Tracker(),
            limits=AudioLimits(max_seconds=7200),
        )
    assert failure.value.code == "too_long" and recordings.duration is None


async def test_each_piece_is_passed_on_as_one_part_and_the_last_completes_the_stage() -> None:
    source = ref("audio")
    audio, recordings, tracker = FakeAudio(Plan(0, (), None)), FakeRecordings(), Tracker()
    eid = uuid.uuid4()
    pieces = [
        AudioPieceQueued(
            correlation_id=eid,
            causation_id=eid,
            producer="transcription",
            source=source,
            storage_url="file:///s/a.m4a",
            duration_seconds=1200.0,
            piece_index=i,
            piece_count=2,
            start_seconds=600.0 * i,
            end_seconds=600.0 * (i + 1),
            channels=None,
        )
        for i in range(2)
    ]
    first = await transcribe(pieces[1], audio=audio, recordings=recordings, tracker=tracker)
    second = await transcribe(pieces[0], audio=audio, recordings=recordings, tracker=tracker)

    [part1], [part0] = first, second
    assert isinstance(part0, TextExtracted) and isinstance(part1, TextExtracted)
    assert (part0.part_index, part0.part_count, part1.part_index) == (0, 2, 1)
    assert [s.text for s in part1.segments] == ["words from 600"], "blank segments are dropped"
    assert part1.segments[0].start_seconds == 601.0, "times are absolute"
    assert tracker.calls == [
        ("progressed", "transcription", 600, 1200),
        ("finished", "transcription", 1200, "embedding"),
    ]


# ------------------------------------------------------------------------------------------------------- OCR


class FakePhotos:
    def __init__(self, result: PhotoText | PermanentError) -> None:
        self.result = result

    async def read(self, url: str) -> PhotoText:
        if isinstance(self.result, PermanentError):
            raise self.result
        return self.result


class FakePhotoRows:
    def __init__(self) -> None:
        self.status = "pending"
        self.text: str | None = None

    async def started(self, source: SourceRef) -> None:
        self.status = "processing"

    async def completed(self, source: SourceRef, *, text: str) -> None:
        self.status, self.text = "completed", text


def photo_uploaded(source: SourceRef) -> PhotoUploaded:
    eid = uuid.uuid4()
    return PhotoUploaded(
        correlation_id=eid, causation_id=eid, producer="upload", source=source, storage_url="file:///s/p.jpg"
    )


async def test_a_photos_lines_go_on_with_their_confidence() -> None:
    lines = (
        TextSegment(text="Mitosis: PMAT", confidence=91.0),
        TextSegment(text="prophase metaphase", confidence=42.5),
    )
    rows, tracker = FakePhotoRows(), Tracker()
    out = await extract_text(
        photo_uploaded(ref("photo")),
        photos=FakePhotos(
            PhotoText(
                lines=lines,
                text="Mitosis: PMAT\nprophase metaphase",
                mean_confidence=70,
                low_confidence_words=1,
            )
        ),
        rows=rows,
        tracker=tracker,
    )
    [event] = out
    assert isinstance(event, TextExtracted) and list(event.segments) == list(lines)
    assert rows.status == "completed" and rows.text == "Mitosis: PMAT\nprophase metaphase"
    assert tracker.calls[-1] == ("finished", "ocr", 1, "embedding")


async def test_a_photo_without_text_or_unreadable_fails_with_its_reason() -> None:
    rows = FakePhotoRows()
    with pytest.raises(PermanentError) as failure:
        await extract_text(
            photo_uploaded(ref("photo")),
            photos=FakePhotos(PhotoText((), "  ", 0, 0)),
            rows=rows,
            tracker=Tracker(),
        )
    assert failure.value.code == "no_text" and rows.text is None
    with pytest.raises(PermanentError) as failure:
        await extract_text(
            photo_uploaded(ref("photo")),
            photos=FakePhotos(PermanentError("corrupt_image", "truncated")),
            rows=FakePhotoRows(),
            tracker=Tracker(),
        )
    assert failure.value.code == "corrupt_image"


# ------------------------------------------------------------------------------------------------- textbooks


class FakeBooks:
    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.asked: list[tuple[int, int]] = []

    async def inspect(self, url: str) -> BookInfo:
        return BookInfo(page_count=self.pages)

    async def extract(self, url: str, *, first_page: int, last_page: int) -> list[TextSegment]:
        self.asked.append((first_page, last_page))
        return [
            TextSegment(text=f"Page {n} text.", page=n) for n in range(first_page, last_page + 1) if n % 7
        ]


class FakeBookRows:
    def __init__(self) -> None:
        self.page_count: int | None = None
        self.ranges: set[int] = set()

    async def started(self, source: SourceRef, *, page_count: int) -> None:
        self.page_count = page_count

    async def range_done(self, event: TextbookPagesQueued, pages: Sequence[TextSegment]) -> RangeProgress:
        self.ranges.add(event.range_index)
        return RangeProgress(
            pages_done=25 * len(self.ranges), completed_now=len(self.ranges) == event.range_count
        )


def textbook_uploaded(source: SourceRef) -> TextbookUploaded:
    eid = uuid.uuid4()
    return TextbookUploaded(
        correlation_id=eid, causation_id=eid, producer="upload", source=source, storage_url="file:///s/b.pdf"
    )


async def test_a_book_is_planned_into_ranges_that_cover_every_page_once() -> None:
    rows, books = FakeBookRows(), FakeBooks(1013)
    out = await plan_textbook(
        textbook_uploaded(ref("textbook")),
        books=books,
        rows=rows,
        tracker=Tracker(),
        limits=BookLimits(max_pages=5000, pages_per_range=25),
    )
    ranges = [e for e in out if isinstance(e, TextbookPagesQueued)]
    assert rows.page_count == 1013 and len(ranges) == 41
    covered = [n for r in ranges for n in range(r.first_page, r.last_page + 1)]
    assert covered == list(range(1, 1014))
    assert {r.range_count for r in ranges} == {41} and [r.range_index for r in ranges] == list(range(41))


async def test_a_book_over_the_page_limit_is_refused() -> None:
    with pytest.raises(PermanentError) as failure:
        await plan_textbook(
            textbook_uploaded(ref("textbook")),
            books=FakeBooks(6000),
            rows=FakeBookRows(),
            tracker=Tracker(),
            limits=BookLimits(max_pages=5000, pages_per_range=25),
        )
    assert failure.value.code == "too_many_pages"


async def test_each_range_is_one_part_with_page_numbers() -> None:
    source, books, rows, tracker = ref("textbook"), FakeBooks(50), FakeBookRows(), Tracker()
    eid = uuid.uuid4()
    ranges = [
        TextbookPagesQueued(
            correlation_id=eid,
            causation_id=eid,
            producer="chunking",
            source=source,
            storage_url="file:///s/b.pdf",
            page_count=50,
            range_index=i,
            range_count=2,
            first_page=1 + 25 * i,
            last_page=25 * (i + 1),
        )
        for i in range(2)
    ]
    [second] = await chunk_textbook(ranges[1], books=books, rows=rows, tracker=tracker)
    [first] = await chunk_textbook(ranges[0], books=books, rows=rows, tracker=tracker)
    assert isinstance(first, TextExtracted) and isinstance(second, TextExtracted)
    assert (first.part_index, second.part_index, first.part_count) == (0, 1, 2)
    assert [s.page for s in first.segments] == [n for n in range(1, 26) if n % 7]
    assert books.asked == [(26, 50), (1, 25)]
    assert tracker.calls == [("progressed", "chunking", 25, 50), ("finished", "chunking", 50, "embedding")]
