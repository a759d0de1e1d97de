"""Personal data in a text (`pii`): e-mail addresses, phone numbers, Chinese resident ID numbers, bank card
numbers and IP addresses — found, or replaced by typed placeholders ([EMAIL], [PHONE], [CN_ID], [BANK_CARD], [IP]).

How: candidates come from tight regexes (ASCII-digit boundaries, so "身份证号110105…是" is found inside Chinese
text), then each is validated by a well-kept library instead of hand-written rules: phone numbers by
`phonenumbers` (libphonenumber's metadata: a number must be valid for its region, mainland China for numbers
without a country code, the US for `(415) 555-2671` / `415-555-2671`), resident IDs by `python-stdnum`
(`stdnum.cn.ric`: region, birth date and the ISO 7064 check digit), card numbers by the Luhn check
(`stdnum.luhn`) plus the issuer prefix and length (Visa, Mastercard, Amex, UnionPay, JCB, Discover — a short
table written here: stdnum has no issuer list), IP addresses by the standard library's `ipaddress`.

Not personal data, so never reported:
- documentation and exercise addresses: RFC 2606/6761 domains (example.com, *.example, *.test, *.invalid,
  *.localhost), `domain.com`, `yourdomain.com`, one-letter domains (`a@d.co` in a regex exercise);
- IP addresses that are not global (private, loopback, link-local, documentation ranges such as 192.0.2.0/24),
  well-known public resolvers (8.8.8.8, 1.1.1.1, 114.114.114.114 …), and dotted version strings (single-digit
  parts like 1.2.3.4, or a number after "version" / "v" / "版本");
- numbers labelled as something else just before them: order, tracking, invoice, serial numbers, 订单号, 单号,
  运单, 快递, 编号, 流水号, 工单, 序列号, 发票 (an 18-digit order number can pass Luhn by chance);
- terms of a sum: a number right after `=`, `+`, `-`, `*`, `×`, `÷` or right before an operator and a digit
  (`84834150134 - 6778576 = -16666579378` is arithmetic, though 16666579378 is a valid mobile number);
- numbers that fail validation: timestamps (1701388800000), dates (2023-12-01), 14-digit times, random digit
  runs, company hotlines (400-/800-: businesses, not people).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

KINDS = ("email", "phone", "cn_id", "bank_card", "ip")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "cn_id": "[CN_ID]", "bank_card": "[BANK_CARD]", "ip": "[IP]"}

# Polars prefilter (Rust regex): every text with a candidate of any kind matches it.
PREFILTER = (
    r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9.-]*[A-Za-z]"  # e-mail
    r"|[0-9](?:[ ().+-]{0,2}[0-9]){9}"  # phone, ID, card: every kind has at least ten digits
    r"|[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"  # IPv4
    r"|[0-9A-Fa-f]{1,4}::|::[0-9A-Fa-f]{1,4}|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"  # IPv6
)

_B = r"(?<![0-9A-Za-z])"  # ASCII boundaries: a Han character next to a number is a boundary
_E = r"(?![0-9A-Za-z])"
# Three scans, each run only when its kind can be there ("@" in the text, a digit, a colon), and the number scan
# guarded by a one-character lookahead: Python's re otherwise tries every alternative at every position.
_EMAIL_RE = re.compile(
    r"(?P<email>(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-]))"
)
_NUMBER_RE = re.compile(
    r"(?=[0-9+(])(?:"
    + "|".join(
        (
            # 18-character resident ID: region (first digit 1-8), birth date, sequence, check digit
            _B + r"(?P<cn_id>[1-8][0-9]{5}(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
            + r"[0-9]{3}[0-9Xx])" + _E,
            _B + r"(?P<card>[0-9]{15,19}|[0-9]{4}(?:[ -][0-9]{4}){3}(?:[ -]?[0-9]{1,3})?"
            + r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})" + _E,
            _B + r"(?P<cn_mobile>(?:(?:\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2})" + _E,
            _B + r"(?P<cn_landline>\(?0[1-9][0-9]{1,2}\)?[ -]?[2-9][0-9]{6,7})" + _E,
            (r"(?<![0-9A-Za-z+])(?P<intl>\+[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}"
             r"(?:[ .-]?[0-9]{2,4}){1,4})") + _E,
            _B + r"(?P<nanp>(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-.])[2-9][0-9]{2}[-.][0-9]{4})" + _E,
            r"(?<![\w.])(?P<ipv4>(?:[0-9]{1,3}\.){3}[0-9]{1,3})(?![\w]|\.[0-9])",
        )
    )
    + ")"
)
_IPV6_RE = re.compile(r"(?<![\w:.])(?P<ipv6>(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w:])")
_DIGIT_RE = re.compile(r"[0-9]")


def _candidates(text: str, wanted: set[str]) -> list[re.Match[str]]:
    found: list[re.Match[str]] = []
    if "email" in wanted and "@" in text:
        found += _EMAIL_RE.finditer(text)
    if wanted & {"phone", "cn_id", "bank_card", "ip"} and _DIGIT_RE.search(text):
        found += _NUMBER_RE.finditer(text)
    if "ip" in wanted and ":" in text:
        found += _IPV6_RE.finditer(text)
    found.sort(key=lambda m: m.start())
    out, end = [], -1
    for m in found:  # the scans may overlap (an e-mail's digits, an IPv6 address's groups): first one wins
        if m.start() >= end:
            out.append(m)
            end = m.end()
    return out


_NOT_PERSONAL_DOMAIN = re.compile(
    r"(?i)(?:^|\.)(?:example\.(?:com|org|net|edu)|[^.]+\.(?:example|test|invalid|localhost)|domain\.com|yourdomain\.com)$"
)
_OTHER_NUMBER_LABEL = re.compile(
    r"(?i)(?:order|tracking|invoice|serial|transaction|ticket|ref(?:erence)?|sku|isbn|订单|单号|运单|快递|编号|流水号|"
    r"工单|序列号|发票|交易号|批次)"
    r"[\w \t]{0,6}?(?:no\.?|number|id|#|号|码)?[ \t]*[:：#]?[ \t]*$"
)
_VERSION_LABEL = re.compile(r"(?i)(?:version|ver\.?|v|release|版本|版本号)[ \t]*[:：]?[ \t]*$")
_WELL_KNOWN_IPS = {
    "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222", "208.67.220.220",
    "114.114.114.114", "114.114.115.115", "223.5.5.5", "223.6.6.6", "119.29.29.29", "180.76.76.76",
}
# Issuer prefixes and lengths of card numbers (ISO/IEC 7812 IIN ranges of the networks a zh/en user meets).
_CARD_RULES = (
    (re.compile(r"^4"), (13, 16, 19)),  # Visa
    (re.compile(r"^(?:5[1-5]|2(?:22[1-9]|2[3-9][0-9]|[3-6][0-9]{2}|7[01][0-9]|720))"), (16,)),  # Mastercard
    (re.compile(r"^3[47]"), (15,)),  # American Express
    (re.compile(r"^62"), (16, 17, 18, 19)),  # UnionPay
    (re.compile(r"^35(?:2[89]|[3-8][0-9])"), (16, 17, 18, 19)),  # JCB
    (re.compile(r"^(?:6011|65|64[4-9])"), (16, 17, 18, 19)),  # Discover
)


@lru_cache(maxsize=1)
def _libs():
    import phonenumbers
    from stdnum import luhn
    from stdnum.cn import ric

    return phonenumbers, luhn, ric


_ARITH_BEFORE = re.compile(r"(?:[=+*×÷^]|(?<![A-Za-z])-)[ \t]*$")
_ARITH_AFTER = re.compile(r"^[ \t]*[=+\-*/×÷^][ \t]*[0-9]")


def _labelled_as_other(text: str, start: int, end: int) -> bool:
    """Labelled as an order/serial number, or a term of a sum (`84834150134 - 6778576 = -16666579378`)."""
    before = text[max(0, start - 16):start]
    return bool(_OTHER_NUMBER_LABEL.search(before) or _ARITH_BEFORE.search(before[-3:])
                or _ARITH_AFTER.match(text[end:end + 4]))


def _phone_ok(number: str, region: str | None) -> bool:
    phonenumbers = _libs()[0]
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(parsed):
        return False
    # Freephone / shared-cost / premium numbers (400-, 800-, 1-800-) are businesses, not people.
    kind = phonenumbers.number_type(parsed)
    T = phonenumbers.PhoneNumberType
    return kind not in (T.TOLL_FREE, T.SHARED_COST, T.PREMIUM_RATE, T.UAN)


def _card_ok(digits: str) -> bool:
    if not any(p.match(digits) and len(digits) in lengths for p, lengths in _CARD_RULES):
        return False
    return _libs()[1].is_valid(digits)


def _ip_ok(text: str, start: int, value: str, v4: bool) -> bool:
    if v4:
        parts = value.split(".")
        if value in _WELL_KNOWN_IPS or all(len(p) == 1 for p in parts):
            return False
        if _VERSION_LABEL.search(text[max(0, start - 10):start]):
            return False
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    return addr.is_global and not addr.is_multicast


def find_spans(text: str | None, kinds: tuple[str, ...] = KINDS) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every validated item of `kinds` in `text`, in order, not overlapping."""
    if not text:
        return []
    wanted = set(kinds)
    spans: list[tuple[int, int, str]] = []
    for m in _candidates(text, wanted):
        group = m.lastgroup or ""
        value, start = m.group(group), m.start(group)
        kind = None
        if group == "email":
            domain = value.rsplit("@", 1)[1]
            toy = len(domain.split(".")[-2]) == 1  # a@d.co, f@w.co: exercise data, not a mailbox
            kind = None if toy or _NOT_PERSONAL_DOMAIN.search(domain) else "email"
        elif group in ("ipv4", "ipv6"):
            kind = "ip" if _ip_ok(text, start, value, group == "ipv4") else None
        elif _labelled_as_other(text, start, start + len(value)):
            kind = None
        elif group == "cn_id":
            if _libs()[2].is_valid(value):
                kind = "cn_id"
            elif _card_ok(value) and "X" not in value.upper():
                kind = "bank_card"
        elif group == "card":
            digits = re.sub(r"[ -]", "", value)
            if _card_ok(digits):
                kind = "bank_card"
            elif len(digits) == 18 and _libs()[2].is_valid(digits):
                kind = "cn_id"
        elif group in ("cn_mobile", "cn_landline"):
            kind = "phone" if _phone_ok(value, "CN") else None
        elif group == "intl":
            kind = "phone" if _phone_ok(value, None) else None
        elif group == "nanp":
            kind = "phone" if _phone_ok(value, "US") else None
        if kind and kind in wanted:
            spans.append((start, start + len(value), kind))
    return spans


def kinds_in(text: str | None, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """The kinds of personal data found in `text` (sorted, no repeats)."""
    return sorted({k for _, _, k in find_spans(text, kinds)})


def redact(text: str | None, kinds: tuple[str, ...] = KINDS) -> str | None:
    """`text` with every item of `kinds` replaced by its placeholder."""
    spans = find_spans(text, kinds)
    if not spans or text is None:
        return text
    out, last = [], 0
    for start, end, kind in spans:
        out += [text[last:start], PLACEHOLDERS[kind]]
        last = end
    out.append(text[last:])
    return "".join(out)
