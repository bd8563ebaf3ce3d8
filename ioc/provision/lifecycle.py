"""Device lifecycle in the registry (table ``devices``): bulk import, edit, decommission, and the
site file reconciled with the registry. The rules are in ``docs/devices.md``.

Every record, whatever its source (the site file, ``POST /api/v1/devices``, an import row, a
``PATCH``), is checked by one function, :meth:`ioc.core.site.Site.check_device`; this module adds
what needs the registry: a lamp's cabinet must exist, a device's kind never changes, and a
decommissioned device stays decommissioned (no import, edit or site sync brings it back).

Import: each row gets its own result — ``created``, ``updated``, ``unchanged`` or ``refused``
with the row number, the field and what is wrong; one bad row refuses only itself. The accepted
rows are written in one transaction (all of them or, on a database error, none), and a dry run
reports the same results without writing.

Reconciliation at start: the site file's devices are upserted (the site file wins for the
devices it lists — an API edit of such a device is reset), devices added through the API or an
import are kept, decommissioned devices stay decommissioned. :func:`diff` says what differs
before the sync; ``ioc serve`` logs it and ``ioc devices diff`` prints it.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ioc.core.devices import Device, DeviceError
from ioc.storage import devices as device_store
from ioc.storage.devices import CHANNEL

if TYPE_CHECKING:
    from ioc.core.site import Site

log = logging.getLogger(__name__)

# An import is one request and one transaction: bounded so that a mistaken file (a whole
# database dump) is refused whole instead of holding a transaction open for minutes. 10,000
# rows is the largest site the benchmarks run (docs/performance.md); split a larger file.
MAX_IMPORT_ROWS: Final = 10_000
FIELDS: Final = ("id", "kind", "city", "ward", "name", "lat", "lon", "attributes")
ATTRIBUTE_COLUMN: Final = "attributes."  # CSV: one column per attribute, e.g. attributes.station
# What a PATCH may change; the id names the device, and its kind fixes its metrics and topics.
EDITABLE: Final = frozenset({"name", "city", "ward", "lat", "lon", "attributes"})
_LEVELS: Final = ("bd1", "bd2", "bd3")  # a flood gauge's copy of its station's levels

Result = Literal["created", "updated", "unchanged", "refused"]
Format = Literal["csv", "json"]


class ImportFileError(ValueError):
    """A file that cannot be read as rows at all (not CSV/JSON, no header, too many rows)."""


class AlreadyRegistered(DeviceError):
    def __init__(self, device_id: str) -> None:
        super().__init__("id", f"device {device_id!r} already exists")


class DeviceNotFound(LookupError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"no device {device_id!r}")
        self.device_id = device_id


class Decommissioned(RuntimeError):
    """A change to a device that was decommissioned (it stays decommissioned)."""

    def __init__(self, device_id: str, at: datetime) -> None:
        super().__init__(
            f"device {device_id!r} was decommissioned at {at.isoformat()}; "
            "decommissioned devices stay decommissioned (register a new id)"
        )
        self.device_id = device_id
        self.at = at


@dataclass(frozen=True, slots=True)
class Registered:
    """A registry row: the device and its lifecycle state."""

    device: Device
    source: str
    decommissioned_at: datetime | None = None
    decommission_reason: str | None = None


@dataclass(frozen=True, slots=True)
class RowResult:
    row: int  # 1-based: the n-th record of the file (CSV: the n-th line after the header)
    id: str | None
    result: Result
    field: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ImportReport:
    dry_run: bool
    rows: tuple[RowResult, ...]

    def count(self, result: Result) -> int:
        return sum(1 for r in self.rows if r.result == result)

    def summary(self) -> str:
        return ", ".join(
            f"{self.count(r)} {r}" for r in ("created", "updated", "unchanged", "refused")
        )


# ------------------------------------------------------------------------------ the files


def format_of(name: str) -> Format:
    """``csv`` or ``json`` from a file name or a media type (``text/csv``)."""
    lowered = name.lower().split(";")[0].strip()
    if lowered.endswith(("csv", "/csv")):
        return "csv"
    if lowered.endswith("json"):
        return "json"
    raise ImportFileError(f"{name!r}: expected a .csv or .json file (text/csv, application/json)")


def parse_rows(data: bytes | str, fmt: Format) -> list[tuple[int, dict[str, Any] | DeviceError]]:
    """The file's records, numbered from 1, each a raw record or the reason it cannot be one
    (a CSV cell that is not what its column holds): such a row is refused on its own."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    rows = _json_rows(text) if fmt == "json" else _csv_rows(text)
    if len(rows) > MAX_IMPORT_ROWS:
        raise ImportFileError(
            f"{len(rows)} rows; an import takes at most {MAX_IMPORT_ROWS} (split the file)"
        )
    return rows


def _json_rows(text: str) -> list[tuple[int, dict[str, Any] | DeviceError]]:
    """A JSON array of device objects, or ``{"devices": [...]}`` (the shape of the site file)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ImportFileError(f"not valid JSON: {exc}") from None
    if isinstance(doc, dict) and set(doc) == {"devices"}:
        doc = doc["devices"]
    if not isinstance(doc, list):
        raise ImportFileError('expected a JSON array of devices (or {"devices": [...]})')
    out: list[tuple[int, dict[str, Any] | DeviceError]] = []
    for n, item in enumerate(doc, start=1):
        if isinstance(item, dict):
            out.append((n, item))
        else:
            out.append((n, DeviceError("row", f"expected an object, got {type(item).__name__}")))
    return out


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any] | DeviceError]]:
    """A header line, then one device per line. Columns: id, kind, city, ward (empty: none),
    name, lat, lon; attributes as one JSON object in ``attributes`` and/or one column each as
    ``attributes.<key>`` (a cell that reads as JSON — 0.55, true — is taken as that value, any
    other as text; an empty cell is no attribute)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportFileError("empty CSV file: expected a header line") from None
    except csv.Error as exc:
        raise ImportFileError(f"CSV header: {exc}") from None
    unknown = [h for h in header if h not in FIELDS and not h.startswith(ATTRIBUTE_COLUMN)]
    if unknown:
        raise ImportFileError(
            f"CSV header: unknown column(s) {unknown} (expected {list(FIELDS)} "
            f"or {ATTRIBUTE_COLUMN}<key>)"
        )
    if len(set(header)) != len(header):
        raise ImportFileError(f"CSV header: a column is named twice in {header}")
    out: list[tuple[int, dict[str, Any] | DeviceError]] = []
    n = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return out
        except csv.Error as exc:
            raise ImportFileError(f"CSV line {reader.line_num}: {exc}") from None
        if not any(c.strip() for c in cells):
            continue  # blank lines (a trailing one, a spreadsheet's) are not records
        n += 1
        try:
            out.append((n, _csv_record(header, cells)))
        except DeviceError as exc:
            out.append((n, exc))


def _csv_record(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(header):
        raise DeviceError("row", f"{len(cells)} cells for {len(header)} columns")
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, raw in zip(header, cells, strict=True):
        cell = raw.strip()
        if column == "attributes":
            if cell:
                try:
                    value = orjson.loads(cell)
                except orjson.JSONDecodeError:
                    value = None
                if not isinstance(value, dict):
                    raise DeviceError("attributes", f"expected a JSON object, got {cell!r}")
                attributes = value | attributes
        elif column.startswith(ATTRIBUTE_COLUMN):
            if cell:
                try:
                    attributes[column.removeprefix(ATTRIBUTE_COLUMN)] = orjson.loads(cell)
                except orjson.JSONDecodeError:
                    attributes[column.removeprefix(ATTRIBUTE_COLUMN)] = cell
        elif column in ("lat", "lon"):
            try:
                record[column] = float(cell)
            except ValueError:
                # left as text: the shared check names it ("expected a number, got '9,78'")
                record[column] = cell
        elif column == "ward":
            record[column] = cell or None
        else:
            record[column] = cell
    if attributes:
        record["attributes"] = attributes
    return record


# ---------------------------------------------------------------------------- the registry


async def registry(
    conn: psycopg.AsyncConnection, ids: Sequence[str] | None = None, *, lock: bool = False
) -> dict[str, Registered]:
    """Every device of the registry (or those of ``ids``) with its lifecycle state; ``lock``
    holds the rows until the transaction ends (an import or edit decides on what it read)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, kind, city, ward, name, lat, lon, attributes, source,"
            " decommissioned_at, decommission_reason FROM devices"
            " WHERE %(ids)s::text[] IS NULL OR id = ANY(%(ids)s::text[]) ORDER BY id"
            + (" FOR UPDATE" if lock else ""),
            {"ids": None if ids is None else list(ids)},
        )
        rows = await cur.fetchall()
    return {
        r["id"]: Registered(
            device_store.row_to_device(r),
            r["source"],
            r["decommissioned_at"],
            r["decommission_reason"],
        )
        for r in rows
    }


def _cabinet_problem(
    device: Device, cabinets: Mapping[str, Device], where: str = "registry"
) -> DeviceError | None:
    """A lamp must name a cabinet in service in the same city (the site file's rule)."""
    if device.kind != "lighting":
        return None
    cabinet_id = device.attributes.get("cabinet")
    cabinet = cabinets.get(cabinet_id) if isinstance(cabinet_id, str) else None
    if cabinet is None:
        return DeviceError(
            "attributes.cabinet", f"no cabinet {cabinet_id!r} in service in the {where}"
        )
    if cabinet.kind != "cabinet":
        return DeviceError("attributes.cabinet", f"{cabinet_id!r} is a {cabinet.kind}")
    if cabinet.city != device.city:
        return DeviceError(
            "attributes.cabinet", f"{cabinet_id!r} is in {cabinet.city}, not {device.city}"
        )
    return None


async def _cabinets(conn: psycopg.AsyncConnection, ids: Iterable[str]) -> dict[str, Device]:
    found = await registry(conn, sorted(set(ids)))
    return {k: v.device for k, v in found.items() if v.decommissioned_at is None}


async def _check_cabinet(conn: psycopg.AsyncConnection, device: Device) -> None:
    if device.kind == "lighting":
        found = await _cabinets(conn, [str(device.attributes.get("cabinet"))])
        problem = _cabinet_problem(device, found)
        if problem is not None:
            raise problem


def _insert_params(d: Device, source: str) -> tuple[Any, ...]:
    return (d.id, d.kind, d.city, d.ward, d.name, d.lat, d.lon, Jsonb(d.attributes), source)


async def _write(conn: psycopg.AsyncConnection, devices: Sequence[Device], source: str) -> None:
    """Insert or update, never touching a decommissioned row; ingest workers reload on commit."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO devices (id, kind, city, ward, name, lat, lon, attributes, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET city = excluded.city, ward = excluded.ward,"
            " name = excluded.name, lat = excluded.lat, lon = excluded.lon,"
            " attributes = excluded.attributes, updated_at = now()"
            " WHERE devices.decommissioned_at IS NULL",
            [_insert_params(d, source) for d in devices],
        )
    await conn.execute("SELECT pg_notify(%s, '*')", (CHANNEL,))


# ------------------------------------------------------------------------------- register


async def register(conn: psycopg.AsyncConnection, site: Site, raw: Mapping[str, Any]) -> Device:
    """``POST /api/v1/devices``: a new device; :class:`DeviceError` when invalid,
    :class:`AlreadyRegistered` when the id is taken, :class:`Decommissioned` when it belonged
    to a decommissioned device."""
    device = site.check_device(raw)
    async with conn.transaction():
        existing = (await registry(conn, [device.id], lock=True)).get(device.id)
        if existing is not None and existing.decommissioned_at is not None:
            raise Decommissioned(device.id, existing.decommissioned_at)
        if existing is not None:
            raise AlreadyRegistered(device.id)
        await _check_cabinet(conn, device)
        cur = await conn.execute(  # DO NOTHING: a concurrent registration of the id wins
            "INSERT INTO devices (id, kind, city, ward, name, lat, lon, attributes, source)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            _insert_params(device, "api"),
        )
        if cur.rowcount != 1:
            raise AlreadyRegistered(device.id)
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, device.id))
    return device


# --------------------------------------------------------------------------------- import


async def import_devices(
    conn: psycopg.AsyncConnection,
    site: Site,
    rows: Sequence[tuple[int, dict[str, Any] | DeviceError]],
    *,
    dry_run: bool = False,
) -> ImportReport:
    """Check every row, then write the accepted ones in one transaction (none when
    ``dry_run``). ``conn`` must not be inside a transaction already."""
    results: dict[int, RowResult] = {}
    checked: list[tuple[int, Device]] = []
    first_row: dict[str, int] = {}
    for n, raw in rows:
        ident = raw.get("id") if isinstance(raw, dict) else None
        ident = ident if isinstance(ident, str) else None
        try:
            if isinstance(raw, DeviceError):
                raise raw
            device = site.check_device(raw)
            if device.id in first_row:
                raise DeviceError("id", f"{device.id!r} is also in row {first_row[device.id]}")
        except DeviceError as exc:
            results[n] = RowResult(n, ident, "refused", exc.field, exc.message)
            continue
        first_row[device.id] = n
        checked.append((n, device))
    async with conn.transaction():
        existing = await registry(conn, [d.id for _, d in checked], lock=True)
        accepted: dict[str, tuple[int, Device, Result]] = {}
        for n, device in checked:
            before = existing.get(device.id)
            if before is not None and before.decommissioned_at is not None:
                at = before.decommissioned_at.isoformat()
                results[n] = RowResult(
                    n, device.id, "refused", "id",
                    f"decommissioned at {at}; decommissioned devices stay decommissioned",
                )  # fmt: skip
            elif before is not None and before.device.kind != device.kind:
                results[n] = RowResult(
                    n, device.id, "refused", "kind",
                    f"registered as {before.device.kind}; a device's kind cannot change "
                    "(decommission it and register a new id)",
                )  # fmt: skip
            else:
                result: Result = (
                    "created" if before is None
                    else "unchanged" if before.device == device
                    else "updated"
                )  # fmt: skip
                accepted[device.id] = (n, device, result)
        # Lamps: their cabinet is in service in the registry or accepted in this file. A lamp
        # whose cabinet row was refused is refused too (it would point at nothing).
        in_file = {i: d for i, (_, d, _) in accepted.items() if d.kind == "cabinet"}
        wanted = {
            str(d.attributes.get("cabinet"))
            for _, d, _ in accepted.values()
            if d.kind == "lighting"
        }
        cabinets = await _cabinets(conn, wanted - in_file.keys()) | in_file
        for device_id, (n, device, _) in list(accepted.items()):
            problem = _cabinet_problem(device, cabinets, "registry or this file")
            if problem is not None:
                results[n] = RowResult(n, device_id, "refused", problem.field, problem.message)
                del accepted[device_id]
        for n, device, result in accepted.values():
            results[n] = RowResult(n, device.id, result)
        changed = [d for _, d, r in accepted.values() if r != "unchanged"]
        if changed and not dry_run:
            await _write(conn, changed, "import")
    report = ImportReport(dry_run, tuple(results[n] for n in sorted(results)))
    log.info("device import%s: %s", " (dry run)" if dry_run else "", report.summary())
    return report


# ----------------------------------------------------------------------- edit, decommission


def _merged_attributes(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Merge Patch (RFC 7396) of the attributes: a key set to null is removed. A flood
    gauge moved to another station drops its copied levels (the new station's are copied)."""
    out = dict(current)
    if "station" in patch and patch["station"] != current.get("station"):
        for level in _LEVELS:
            if level not in patch:
                out.pop(level, None)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


async def update(
    conn: psycopg.AsyncConnection, site: Site, device_id: str, patch: Mapping[str, Any]
) -> Device:
    """``PATCH /api/v1/devices/{id}``: the fields given replace the device's (``attributes`` is
    merged, RFC 7396), then the whole record is checked as a registration is."""
    for key in patch:
        if key not in EDITABLE and key not in ("id", "kind"):
            raise DeviceError(key, f"unknown field (editable: {sorted(EDITABLE)})")
    async with conn.transaction():
        current = (await registry(conn, [device_id], lock=True)).get(device_id)
        if current is None:
            raise DeviceNotFound(device_id)
        if current.decommissioned_at is not None:
            raise Decommissioned(device_id, current.decommissioned_at)
        before = current.device
        for key, why in (("id", "names the device"), ("kind", "fixes its metrics and topics")):
            if key in patch and patch[key] != getattr(before, key):
                raise DeviceError(key, f"cannot change (it {why}; register a new device)")
        attributes = patch.get("attributes", {})
        if not isinstance(attributes, dict):
            raise DeviceError("attributes", "expected an object (null values remove keys)")
        record: dict[str, Any] = {
            "id": before.id, "kind": before.kind, "city": before.city, "ward": before.ward,
            "name": before.name, "lat": before.lat, "lon": before.lon,
        }  # fmt: skip
        record |= {k: v for k, v in patch.items() if k != "attributes"}
        record["attributes"] = _merged_attributes(before.attributes, attributes)
        device = site.check_device(record)
        await _check_cabinet(conn, device)
        if device != before:
            await _write(conn, [device], current.source)
    return device


async def decommission(
    conn: psycopg.AsyncConnection, device_id: str, reason: str | None = None
) -> Registered:
    """Take a device out of service (idempotent: a second call returns the first time). Its
    readings and events are kept; ingest reloads its index on the NOTIFY and refuses it."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE devices SET decommissioned_at = now(), decommission_reason = %s,"
            " updated_at = now() WHERE id = %s AND decommissioned_at IS NULL",
            (reason, device_id),
        )
        if cur.rowcount:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, device_id))
        found = (await registry(conn, [device_id])).get(device_id)
    if found is None:
        raise DeviceNotFound(device_id)
    if cur.rowcount:
        log.info("device %s decommissioned (%s)", device_id, reason or "no reason given")
    return found


# ---------------------------------------------------------------------------- reconcile


@dataclass(frozen=True, slots=True)
class Difference:
    device_id: str
    # site-only: the sync registers it; registry-only: added by the API or an import, kept;
    # differs: the sync resets these fields from the site file; decommissioned: listed in the
    # site file, stays decommissioned (take it out of the file)
    what: Literal["site-only", "registry-only", "differs", "decommissioned"]
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        extra = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.device_id}: {self.what}{extra}"


def diff(site_devices: Iterable[Device], registered: Mapping[str, Registered]) -> list[Difference]:
    """How the site file and the registry differ, in the site's order then the registry's."""
    out: list[Difference] = []
    listed: set[str] = set()
    for device in site_devices:
        listed.add(device.id)
        reg = registered.get(device.id)
        if reg is None:
            out.append(Difference(device.id, "site-only"))
        elif reg.decommissioned_at is not None:
            out.append(Difference(device.id, "decommissioned"))
        elif reg.device != device:
            fields = tuple(
                f for f in ("kind", "city", "ward", "name", "lat", "lon", "attributes")
                if getattr(reg.device, f) != getattr(device, f)
            )  # fmt: skip
            out.append(Difference(device.id, "differs", fields))
    out += [
        Difference(i, "registry-only")
        for i, reg in registered.items()
        if i not in listed and reg.decommissioned_at is None
    ]
    return out


def log_differences(differences: Sequence[Difference], *, shown: int = 20) -> None:
    """One line at start: how many of each, and the first ``shown`` (``ioc devices diff``
    prints them all)."""
    if not differences:
        log.info("site file and device registry agree")
        return
    counts: dict[str, int] = {}
    for d in differences:
        counts[d.what] = counts.get(d.what, 0) + 1
    listed = "; ".join(str(d) for d in differences[:shown])
    more = (
        f"; … {len(differences) - shown} more (ioc devices diff)"
        if len(differences) > shown
        else ""
    )
    log.info(
        "site file vs device registry: %s — site file wins for its devices, API/import devices "
        "kept, decommissioned stay so: %s%s",
        ", ".join(f"{n} {what}" for what, n in counts.items()),
        listed,
        more,
    )
