"""The broker's symbol master: downloading and parsing Shoonya's daily files, replacing an
exchange's rows, the freeze-quantity table, and the lookups the intake and the paper broker make.

Shoonya publishes one zip per exchange, `<SHOONYA_MASTER_URL>/<EXCH>_symbols.txt.zip`, holding
one comma-separated text file. The columns differ per exchange (equity files: Exchange, Token,
LotSize, Symbol, TradingSymbol, Instrument, TickSize; derivative files add Expiry, OptionType,
StrikePrice) and their order is not promised, so rows are read by header name; rows may end
with a trailing comma, and placeholder rows carry no trading symbol.
"""

import csv
import io
import logging
import math
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import requests
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import FreezeQuantity, Instrument, InstrumentMaster

log = logging.getLogger("orderdesk.instruments")

EXCHANGES = ("NSE", "NFO", "BSE", "BFO", "MCX", "CDS")
REQUIRED = ("Token", "TradingSymbol", "LotSize", "TickSize")
FREEZE_COLUMNS = ("FreezeQty", "FrzQty", "FreezeQuantity")  # a master that carries one
INSERT_BATCH = 2000
DOWNLOAD_TIMEOUT_S = (10, 120)  # connect, read: the NFO file is a few megabytes


class MasterError(Exception):
    """A master that could not be downloaded or read; the message says why."""


@dataclass(frozen=True)
class Spec:
    """What the intake needs of one instrument."""

    trading_symbol: str
    lot_size: int
    tick_size: Decimal
    freeze_qty: int | None

    @property
    def slice_size(self) -> int:
        """The largest whole number of lots within the freeze quantity (0: not even one lot)."""
        return self.freeze_qty // self.lot_size * self.lot_size if self.freeze_qty else 0

    def slices_needed(self, qty: int) -> int:
        """Orders of at most the freeze quantity that `qty` needs (0: it cannot be split)."""
        if self.freeze_qty is None or qty <= self.freeze_qty:
            return 1
        return math.ceil(qty / self.slice_size) if self.slice_size else 0


# --- parsing --------------------------------------------------------------------------------

def master_url(exchange: str) -> str:
    return f"{settings.SHOONYA_MASTER_URL.rstrip('/')}/{exchange}_symbols.txt.zip"


def _text_of(content: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if not names:
                raise MasterError("the zip holds no file")
            return archive.read(names[0]).decode("utf-8-sig", errors="replace")
    except zipfile.BadZipFile as exc:
        raise MasterError(f"not a zip file ({exc})") from None


def _whole(value: str, column: str, line: int) -> int:
    text = value.strip()
    try:
        number = Decimal(text)
        if number != number.to_integral_value() or number <= 0:
            raise InvalidOperation
    except InvalidOperation:
        raise MasterError(f"line {line}: {column} {text[:20]!r} is not a whole number above 0") from None
    return int(number)


def _decimal(value: str, column: str, line: int, *, positive=True) -> Decimal | None:
    """A number above 0 (positive), or for a strike: None when empty, 0 or -1 (not an option)."""
    text = value.strip()
    if not text:
        if positive:
            raise MasterError(f"line {line}: {column} is empty")
        return None
    try:
        number = Decimal(text)
        if not number.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        raise MasterError(f"line {line}: {column} {text[:20]!r} is not a number") from None
    if number <= 0:
        if positive:
            raise MasterError(f"line {line}: {column} {text[:20]!r} must be above 0")
        return None
    return number


def _expiry(value: str, line: int) -> date | None:
    text = value.strip()
    if not text:
        return None
    for layout in ("%d-%b-%Y", "%Y-%m-%d", "%d%b%Y"):  # 26-DEC-2024, as the files spell it
        try:
            return datetime.strptime(text.title(), layout).date()
        except ValueError:
            continue
    raise MasterError(f"line {line}: Expiry {text[:20]!r} is not a date like 26-DEC-2024")


def parse_master(exchange: str, text: str) -> list[Instrument]:
    """The instruments of one exchange's file. Raises MasterError naming the line."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise MasterError("the file is empty")
    columns = {name.strip().lower(): index for index, name in enumerate(header) if name.strip()}
    missing = [name for name in REQUIRED if name.lower() not in columns]
    if missing:
        raise MasterError(f"the header lacks {', '.join(missing)} (it has {', '.join(h for h in header if h)[:120]})")
    freeze_column = next((c.lower() for c in FREEZE_COLUMNS if c.lower() in columns), None)

    def cell(row: list[str], name: str) -> str:
        index = columns.get(name.lower())
        return row[index] if index is not None and index < len(row) else ""

    instruments, seen = [], set()
    for line, row in enumerate(reader, start=2):
        trading_symbol = cell(row, "TradingSymbol").strip().upper()
        if not trading_symbol:
            continue  # a placeholder row
        if trading_symbol in seen:
            raise MasterError(f"line {line}: {trading_symbol} appears twice")
        seen.add(trading_symbol)
        freeze = cell(row, freeze_column).strip() if freeze_column else ""
        instruments.append(Instrument(
            exchange=exchange, token=cell(row, "Token").strip()[:16], trading_symbol=trading_symbol[:64],
            symbol=cell(row, "Symbol").strip().upper()[:64], instrument_type=cell(row, "Instrument").strip()[:16],
            expiry=_expiry(cell(row, "Expiry"), line),
            strike=_decimal(cell(row, "StrikePrice"), "StrikePrice", line, positive=False),
            option_type=cell(row, "OptionType").strip().upper()[:4].replace("XX", ""),
            lot_size=_whole(cell(row, "LotSize"), "LotSize", line),
            tick_size=_decimal(cell(row, "TickSize"), "TickSize", line),
            freeze_qty=_whole(freeze, "FreezeQty", line) if freeze else None,
        ))
    if not instruments:
        raise MasterError("the file lists no instrument")
    return instruments


def download(exchange: str) -> list[Instrument]:
    url = master_url(exchange)
    try:
        reply = requests.get(url, timeout=DOWNLOAD_TIMEOUT_S)
    except requests.RequestException as exc:
        raise MasterError(f"download of {url} failed: {type(exc).__name__}: {exc}"[:250]) from None
    if reply.status_code != 200:
        raise MasterError(f"download of {url} answered HTTP {reply.status_code}")
    return parse_master(exchange, _text_of(reply.content))


# --- the freeze table -----------------------------------------------------------------------

def load_freeze_file(path: str) -> int:
    """Upsert the freeze quantities of a CSV (columns by name: symbol or SYMBOL, freeze_qty or
    VOL_FRZ_QTY as NSE's file calls it, and an optional exchange, NFO when absent). Raises
    MasterError."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
    except OSError as exc:
        raise MasterError(f"cannot read {path}: {exc}") from None
    if not rows:
        raise MasterError(f"{path} is empty")
    columns = {name.strip().lower(): index for index, name in enumerate(rows[0])}
    symbol_at = columns.get("symbol")
    qty_at = next((columns[c] for c in ("freeze_qty", "vol_frz_qty", "freeze qty") if c in columns), None)
    if symbol_at is None or qty_at is None:
        raise MasterError(f"{path}: the header needs symbol and freeze_qty (or VOL_FRZ_QTY)")
    exchange_at = columns.get("exchange")
    values = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) <= max(symbol_at, qty_at) or not row[symbol_at].strip():
            continue
        exchange = row[exchange_at].strip().upper() if exchange_at is not None and len(row) > exchange_at else ""
        values[(exchange or "NFO", row[symbol_at].strip().upper())] = _whole(row[qty_at], "freeze_qty", line)
    with transaction.atomic():
        for (exchange, symbol), qty in values.items():
            FreezeQuantity.objects.update_or_create(exchange=exchange, symbol=symbol, defaults={"freeze_qty": qty})
    return len(values)


# --- the sync -------------------------------------------------------------------------------

def sync(exchanges: Iterable[str], say: Callable[[str], None] = log.info,
         fetch: Callable[[str], list[Instrument]] = download) -> dict[str, str]:
    """Download every exchange's master first, then replace the rows of those that parsed, in
    one transaction; an exchange that failed keeps its rows. {exchange: error} of the failures."""
    loaded, failed = {}, {}
    for exchange in exchanges:
        say(f"{exchange}: downloading {master_url(exchange)}")
        try:
            loaded[exchange] = fetch(exchange)
        except MasterError as exc:
            failed[exchange] = str(exc)
            kept = InstrumentMaster.objects.filter(exchange=exchange).values_list("rows", flat=True).first() or 0
            say(f"{exchange}: FAILED, {exc}; kept the {kept} instruments already loaded")
        else:
            say(f"{exchange}: {len(loaded[exchange])} instruments read")
    now = timezone.now()
    with transaction.atomic():
        for exchange, instruments in loaded.items():
            Instrument.objects.filter(exchange=exchange).delete()
            Instrument.objects.bulk_create(instruments, batch_size=INSERT_BATCH)
            InstrumentMaster.objects.update_or_create(exchange=exchange, defaults=dict(
                rows=len(instruments), synced_at=now, attempted_at=now, error=""))
        for exchange, error in failed.items():
            InstrumentMaster.objects.update_or_create(exchange=exchange, defaults=dict(attempted_at=now,
                                                                                       error=error[:255]))
    for exchange in loaded:
        say(f"{exchange}: {len(loaded[exchange])} instruments loaded")
    return failed


# --- lookups --------------------------------------------------------------------------------

def token_of(exchange: str, trading_symbol: str) -> str | None:
    return Instrument.objects.filter(exchange=exchange, trading_symbol=trading_symbol).values_list(
        "token", flat=True).first()


def specs(exchange: str, trading_symbols: Iterable[str]) -> dict[str, Spec] | None:
    """{trading symbol: Spec} of those the exchange's master lists; None when no master is
    loaded for the exchange (the intake then checks nothing of instruments).

    One hand-written statement (whether a master is loaded, the rows, the freeze table's
    quantities), not three ORM queries: every intake runs it, with or without a master."""
    symbols = sorted(set(trading_symbols))
    if not symbols:
        return None
    marks = ", ".join(["%s"] * len(symbols))
    sql = (f"SELECT i.trading_symbol, i.lot_size, i.tick_size, COALESCE(i.freeze_qty, f.freeze_qty) "
           f"FROM {_MASTERS} m LEFT JOIN {_INSTRUMENTS} i ON i.exchange = m.exchange AND i.trading_symbol IN ({marks}) "
           f"LEFT JOIN {_FREEZE} f ON f.exchange = i.exchange AND f.symbol = i.symbol "
           f"WHERE m.exchange = %s AND m.rows > 0")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*symbols, exchange])
        rows = cursor.fetchall()
    if not rows:
        return None
    # SQLite hands a decimal column back as a float: through str, 0.05 stays 0.05.
    return {symbol: Spec(symbol, lot, Decimal(str(tick)), freeze) for symbol, lot, tick, freeze in rows if symbol}


_MASTERS, _INSTRUMENTS, _FREEZE = (connection.ops.quote_name(model._meta.db_table)
                                   for model in (InstrumentMaster, Instrument, FreezeQuantity))
