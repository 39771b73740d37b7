"""Pure: image types by magic bytes, metadata stripping, and the inbox buckets."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from services.common.events import CaseStatus
from services.intake import domain
from services.intake.attachments import BadImage, sniff_image_type, strip_metadata


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_text_and_exif_chunks_are_dropped() -> None:
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    png = (b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"eXIf", b"MM\x00*GPS") + _png_chunk(b"tEXt", b"Author\x00Wang")
           + _png_chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + _png_chunk(b"IEND", b""))
    assert sniff_image_type(png) == "image/png"
    clean = strip_metadata(png, "image/png")
    assert b"GPS" not in clean and b"Wang" not in clean and b"IDAT" in clean and clean.endswith(b"IEND\xaeB`\x82")


def test_webp_exif_chunk_and_flag_are_dropped() -> None:
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08 | 0x04]) + b"\x00" * 9
    exif = b"EXIF" + struct.pack("<I", 7) + b"GPS-pos" + b"\x00"
    image = b"VP8L" + struct.pack("<I", 4) + b"\x2f\x00\x00\x00"
    payload = b"WEBP" + vp8x + exif + image
    webp = b"RIFF" + struct.pack("<I", len(payload)) + payload
    assert sniff_image_type(webp) == "image/webp"
    clean = strip_metadata(webp, "image/webp")
    assert b"GPS" not in clean and clean[20] & 0x0C == 0 and b"VP8L" in clean
    assert struct.unpack("<I", clean[4:8])[0] == len(clean) - 8


def test_types_are_told_by_bytes_and_broken_images_refused() -> None:
    assert sniff_image_type(b"GIF89a....") is None
    assert sniff_image_type(b"<svg xmlns=...>") is None
    with pytest.raises(BadImage):
        strip_metadata(b"\xff\xd8\xff\xe1\xff\xff", "image/jpeg")  # a segment longer than the file
    with pytest.raises(BadImage):
        strip_metadata(b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")


NOW = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Shanghai


@pytest.mark.parametrize(("status", "deadline", "expected"), [
    (CaseStatus.ASSIGNED, NOW + timedelta(days=5), {"to_sign"}),
    (CaseStatus.SIGNED, NOW + timedelta(days=5), {"handling"}),
    (CaseStatus.SIGNED, NOW + timedelta(hours=10), {"handling", "due_soon"}),
    (CaseStatus.EXTENDED, NOW - timedelta(minutes=1), {"handling", "overdue"}),
    (CaseStatus.REOPENED, NOW + timedelta(hours=1), {"handling", "reopened", "due_soon"}),
    (CaseStatus.ASSIGNED, NOW - timedelta(days=1), {"to_sign", "overdue"}),
    (CaseStatus.REPLIED, NOW - timedelta(days=1), {"awaiting_rating"}),
    (CaseStatus.CLOSED, NOW - timedelta(days=1), set()),
])
def test_each_bucket_is_one_rule(status: CaseStatus, deadline: datetime, expected: set[str]) -> None:
    assert {b.value for b in domain.Bucket if domain.in_bucket(b, status, deadline, NOW)} == expected


def _case(status: CaseStatus = CaseStatus.SIGNED) -> domain.Case:
    return domain.Case(case_id="c-1", tracking_number="WZ2612-AAAA-BBBB", version=3, status=status,
                       created_at=NOW, department_id="city_ecology")


def test_notice_then_answer_and_its_rules() -> None:
    issued = domain.decide(_case(), domain.IssueNotice(domain.NoticeMethod.PHONE, "请回复",
                                                       (NOW + timedelta(days=2)).date()), NOW)
    assert issued.case.open_notice_units() == ["city_ecology"] and issued.case.status is CaseStatus.SIGNED
    answered = domain.decide(issued.case, domain.AnswerNotice("n1", "已整改"), NOW + timedelta(days=1))
    assert answered.case.open_notice_units() == [] and answered.events[0].on_time is True
    with pytest.raises(domain.RuleViolation, match="already answered"):
        domain.decide(answered.case, domain.AnswerNotice("n1", "again"), NOW)
    with pytest.raises(domain.RuleViolation):
        domain.decide(_case(), domain.IssueNotice(domain.NoticeMethod.PHONE, "x", (NOW - timedelta(days=3)).date()),
                      NOW)
    with pytest.raises(domain.IllegalTransition):
        domain.decide(_case(status=CaseStatus.CLOSED), domain.IssueNotice(domain.NoticeMethod.MEETING, "x",
                                                                          NOW.date()), NOW)


def test_callback_rating_needs_a_replied_case() -> None:
    with pytest.raises(domain.RuleViolation):
        domain.decide(_case(status=CaseStatus.RATED), domain.RecordCallback(True, "回访", domain.Rating.SATISFIED), NOW)
    unsatisfied = domain.RecordCallback(True, "回访", domain.Rating.UNSATISFIED)
    out = domain.decide(_case(status=CaseStatus.REPLIED), unsatisfied, NOW)
    assert out.case.status is CaseStatus.RATED and out.events[1].given_by == "callback"
    assert len(out.case.callbacks) == 1
