"""Publishable text, pure: free text with the personal data a citizen typed replaced by markers.

:func:`redact` finds phone numbers (mobile in every common written form, landlines with area codes),
ID-card numbers, e-mail addresses, bank-card numbers, licence plates, chat accounts and names typed in
the usual patterns (``我叫…``, ``联系人…``, ``姓名：…``, ``王先生``), plus the poster's own name and given
name wherever they appear. Numbers that are not personal survive: amounts, dates, times, house numbers,
areas, case and tracking numbers.

Each finding says whether it is *certain*. A phone number or an ID number is certain; a name found by a
pattern is not (its extent is a guess, and the trigger may not introduce a name at all): a text with an
uncertain finding waits for a person (moderation) before it is shown on the public board.

Detection runs over a copy of the text with full-width characters folded to ASCII one for one, so the
offsets of a finding are those of the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    PHONE = "phone"
    ID_CARD = "id_card"
    EMAIL = "email"
    BANK_CARD = "bank_card"
    PLATE = "plate"
    ACCOUNT = "account"  # QQ / WeChat account typed as a contact
    NAME = "name"


MARKERS = {
    Kind.PHONE: "[电话]",
    Kind.ID_CARD: "[身份证号]",
    Kind.EMAIL: "[邮箱]",
    Kind.BANK_CARD: "[银行卡号]",
    Kind.PLATE: "[车牌号]",
    Kind.ACCOUNT: "[联系方式]",
    Kind.NAME: "[姓名]",
}


@dataclass(frozen=True)
class Finding:
    kind: Kind
    start: int
    end: int
    certain: bool


@dataclass(frozen=True)
class Redacted:
    text: str
    findings: tuple[Finding, ...]

    @property
    def uncertain(self) -> bool:
        return any(not f.certain for f in self.findings)

    @property
    def kinds(self) -> list[str]:
        return sorted({f.kind.value for f in self.findings})


# --------------------------------------------------------------------------------------------------
# Folding: full-width forms and look-alike punctuation to ASCII, one character for one
# --------------------------------------------------------------------------------------------------

_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FOLD.update({0x3000: ord(" "), 0x00A0: ord(" "), 0x2010: ord("-"), 0x2011: ord("-"), 0x2012: ord("-"),
              0x2013: ord("-"), 0x2014: ord("-"), 0x2015: ord("-"), 0x2212: ord("-"), 0x30FC: ord("-"),
              0x3002: 0x3002, 0x00B7: ord("."), 0x2022: ord("."), 0x30FB: ord(".")})


def fold(text: str) -> str:
    return text.translate(_FOLD)


# --------------------------------------------------------------------------------------------------
# Patterns (over folded text)
# --------------------------------------------------------------------------------------------------

_SEP = r"[ \-.]"
_NOT_NUMBER_CONTEXT = re.compile(r"(?:单号|订单|运单|快递|编号|案号|工单|流水号|发票|批次|合同号|序号|条码)"
                                 r"[号码]?[：:\s是为]*$")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_ID_CARD = re.compile(
    r"(?<![0-9A-Za-z])[1-9]\d{5}[ \-]?(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[ \-]?\d{3}[\dXx]"
    r"(?![0-9A-Za-z])")
_CARD = re.compile(r"(?<![0-9A-Za-z])(?:\d{4}[ \-]?){3}\d{4}(?:[ \-]?\d{1,3})?(?![0-9A-Za-z])")
_CARD_CONTEXT = re.compile(r"(?:卡号|银行卡|储蓄卡|信用卡|借记卡|账号|帐号|账户|帐户|工资卡|社保卡)"
                           r"[号码]?[：:\s是为]*$")
_MOBILE = re.compile(r"(?<!\d)(?:(?:\+|00)?86[ \-]?|\(\+?86\)[ \-]?)?1" + _SEP + r"?[3-9](?:" + _SEP + r"?\d){9}(?!\d)")
_LANDLINE = re.compile(r"(?<![\d\-])(?:\(0\d{2,3}\)|0\d{2,3})(?:[ \-]|(?<=\)))?[2-9]\d{6,7}(?:(?:转|-|ext\.?)\d{1,5})?"
                       r"(?![\d])")
_LOCAL_PHONE = re.compile(r"(?:电话|手机|座机|联系方式|联系电话|号码|tel|TEL|Tel)[号码]?[：:\s是为]*"
                          r"([2-9]\d{6,7})(?!\d)")
_PLATE = re.compile(
    r"[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][A-HJ-NP-Za-hj-np-z][ .]?"
    r"(?=[A-HJ-NP-Za-hj-np-z0-9]{0,5}\d)(?:[A-HJ-NP-Za-hj-np-z0-9]{5,6}[挂学警港澳]?|[A-HJ-NP-Za-hj-np-z0-9]{4}挂)"
    r"(?![A-Za-z0-9])")
_ACCOUNT = re.compile(r"(?:QQ|qq|微信|微信号|VX|vx|wx|WX)[号]?[：:\s是为]*([A-Za-z][A-Za-z0-9_\-]{5,19}|\d{5,12})"
                      r"(?![A-Za-z0-9_\-])")

# Common single and compound surnames (names are only taken where one of these starts them)
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
                     "夏侯", "轩辕", "令狐", "钟离", "独孤", "南宫", "西门", "端木")
SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔"
    "钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫阎段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤常温康施文"
    "牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛"
    "曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏"
    "席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝")
_SURNAME = "(?:" + "|".join(COMPOUND_SURNAMES) + "|[" + "".join(sorted(SURNAMES)) + "])"
_HAN = r"[\u4e00-\u9fff]"
# after a name: punctuation, the end, a contact word, or words that usually follow one
_AFTER_NAME = (r"(?=$|[\s,，。.、;；:：!！?？)）」』\"'“”(（\[【]|电话|手机|联系|号码|身份证|"
               r"住|家住|现住|是|的|在|反映|投诉|已|来电|同志|先生|女士|小姐|[0-9])")
_NAME_TRIGGER = re.compile(
    r"(?:我叫|我的名字是|我的名字叫|本人叫|本人姓名|本人|姓名|联系人|联系人是|联系人为|署名|签名|户主|业主姓名|当事人|"
    r"反映人|投诉人|举报人|来电人|申请人)[：:\s是为叫]*(" + _SURNAME + _HAN + r"{1,2}?)" + _AFTER_NAME)
_HONORIFIC = re.compile(r"(" + _SURNAME + _HAN + r"{0,2}?)(?=先生|女士|小姐|太太)")
# 师傅, 阿姨… also follow trades (保安师傅, 保洁阿姨): only after a break or a word that introduces a person
_FAMILIAR = re.compile(r"(?:^|(?<=[\s,，。、;；:：!！?？（(“])|(?<=的|位|找|叫|是|姓|跟|和|与|给|对|向|了))("
                       + _SURNAME + r")(?=师傅|阿姨|大爷|大妈|老师|经理|老板|大姐|大哥)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_checksum_ok(number: str) -> bool:
    """The ISO 7064 MOD 11-2 check character of an 18-character resident ID number."""
    digits = re.sub(r"[ \-]", "", number).upper()
    if len(digits) != 18 or not digits[:17].isdigit():
        return False
    check = "10X98765432"[sum(int(d) * w for d, w in zip(digits[:17], _ID_WEIGHTS, strict=True)) % 11]
    return digits[17] == check


def _preceded_by(folded: str, start: int, context: re.Pattern[str]) -> bool:
    return bool(context.search(folded[max(0, start - 12):start]))


class _Spans:
    """Findings in priority order; a later finding never overlaps an earlier one."""

    def __init__(self) -> None:
        self.items: list[Finding] = []

    def free(self, start: int, end: int) -> bool:
        return all(end <= f.start or start >= f.end for f in self.items)

    def add(self, kind: Kind, start: int, end: int, certain: bool = True) -> None:
        if start < end and self.free(start, end):
            self.items.append(Finding(kind, start, end, certain))


def _numbers(folded: str, spans: _Spans) -> None:
    for m in _EMAIL.finditer(folded):
        spans.add(Kind.EMAIL, m.start(), m.end())
    for m in _ID_CARD.finditer(folded):
        if not _preceded_by(folded, m.start(), _NOT_NUMBER_CONTEXT):
            spans.add(Kind.ID_CARD, m.start(), m.end(), certain=id_checksum_ok(m.group()))
    for m in _CARD.finditer(folded):
        digits = re.sub(r"\D", "", m.group())
        if not 16 <= len(digits) <= 19 or _preceded_by(folded, m.start(), _NOT_NUMBER_CONTEXT):
            continue
        if _preceded_by(folded, m.start(), _CARD_CONTEXT):
            spans.add(Kind.BANK_CARD, m.start(), m.end())
        elif digits.startswith("62") or (digits[0] in "3456" and _luhn_ok(digits)):  # 62: UnionPay
            spans.add(Kind.BANK_CARD, m.start(), m.end(), certain=False)
    for m in _MOBILE.finditer(folded):
        spans.add(Kind.PHONE, m.start(), m.end())
    for m in _LANDLINE.finditer(folded):
        if not _preceded_by(folded, m.start(), _NOT_NUMBER_CONTEXT):
            spans.add(Kind.PHONE, m.start(), m.end())
    for m in _LOCAL_PHONE.finditer(folded):
        spans.add(Kind.PHONE, m.start(1), m.end(1))
    for m in _ACCOUNT.finditer(folded):
        spans.add(Kind.ACCOUNT, m.start(1), m.end(1))
    for m in _PLATE.finditer(folded):
        spans.add(Kind.PLATE, m.start(), m.end())


def _private_names(folded: str, names: tuple[str, ...], spans: _Spans) -> None:
    """The poster's own name, and their given name when it is long enough to mean something."""
    needles: set[str] = set()
    for name in names:
        name = re.sub(r"\s+", "", fold(name or ""))
        if len(name) < 2:
            continue
        needles.add(name)
        surname = next((s for s in COMPOUND_SURNAMES if name.startswith(s)), name[0])
        given = name[len(surname):]
        if len(given) >= 2:
            needles.add(given)
    for needle in sorted(needles, key=len, reverse=True):
        for m in re.finditer(re.escape(needle), folded):
            spans.add(Kind.NAME, m.start(), m.end())


def _name_patterns(folded: str, spans: _Spans) -> None:
    for m in _NAME_TRIGGER.finditer(folded):
        spans.add(Kind.NAME, m.start(1), m.end(1), certain=False)
    for pattern in (_HONORIFIC, _FAMILIAR):
        for m in pattern.finditer(folded):
            spans.add(Kind.NAME, m.start(1), m.end(1), certain=False)


def find_personal_data(text: str, private_names: tuple[str, ...] | list[str] = ()) -> list[Finding]:
    """Every finding in ``text``, sorted by position."""
    folded = fold(text)
    spans = _Spans()
    _numbers(folded, spans)
    _private_names(folded, tuple(n for n in private_names if n), spans)
    _name_patterns(folded, spans)
    _names_seen_again(folded, spans)
    return sorted(spans.items, key=lambda f: f.start)


def _names_seen_again(folded: str, spans: _Spans) -> None:
    """A full name the citizen typed after a trigger (``联系人王建华``) is theirs: its given name elsewhere in
    the text goes too (``建华晚上在家``), as the poster's own name does."""
    typed = tuple(folded[f.start:f.end] for f in spans.items if f.kind is Kind.NAME and not f.certain)
    _private_names(folded, tuple(name for name in typed if len(name) >= 3), spans)


def redact(text: str, private_names: tuple[str, ...] | list[str] = ()) -> Redacted:
    """``text`` with every finding replaced by its marker (the findings keep the original offsets)."""
    findings = find_personal_data(text, private_names)
    out: list[str] = []
    at = 0
    for f in findings:
        out.append(text[at:f.start])
        out.append(MARKERS[f.kind])
        at = f.end
    out.append(text[at:])
    return Redacted("".join(out), tuple(findings))


def redact_text(text: str | None, private_names: tuple[str, ...] | list[str] = ()) -> str | None:
    """Just the redacted text (for replies, reasons and notes that never wait for moderation)."""
    return None if text is None else redact(text, private_names).text
