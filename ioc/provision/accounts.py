"""MQTT accounts for Mosquitto: one per field device, plus the service accounts.

``ioc devices provision`` writes three files from the site file:

- the **password file** (``mosquitto_passwd`` format, Mosquitto 2.x): one line per account,
  ``user:$7$<iterations>$<salt b64>$<PBKDF2-HMAC-SHA512 b64>`` — the ``$7$`` scheme of
  mosquitto's ``password_mosq.c`` (12-byte salt, 64-byte key, 101 iterations by default);
- the **ACL file**: each device may *write* its own ``{prefix}/{city}/{kind}/{id}/telemetry``,
  ``…/event`` and ``…/status`` topics (its last will included) and read nothing; the IOC's own
  account reads ``{prefix}/#`` and writes the agencies' dispatch topics; the simulators write
  ``{prefix}/#``; the report relay writes ``{prefix}/+/reports/+``; each agency reads only
  ``{dispatch_prefix}/{agency}``;
- the **credentials file** (mode 0600): ``username,password,role,topics`` per account — the
  plain passwords, for the field team and the installer (``IOC_MQTT_URL`` takes the ``ioc``
  account). It is the source of truth on a re-run: existing passwords are kept, new devices get
  new ones, devices gone from the site lose their account.

With a database, the devices are the registry's (the site file's plus those registered through
the API or an import); a **decommissioned** device gets no account: a re-run revokes its
credentials (its lines leave all three files), and the result names it.

Nothing here talks to the broker: Mosquitto re-reads both files on SIGHUP.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ioc.core.devices import Device
from ioc.core.site import Site
from ioc.core.topics import REPORTS, Channel, device_topic

ITERATIONS = 101  # mosquitto_passwd's default (PW_DEFAULT_ITERATIONS)
SALT_BYTES = 12
IOC_ACCOUNT = "ioc"
SIMULATOR_ACCOUNT = "ioc-simulators"
RELAY_ACCOUNT = "ioc-reports-relay"
AGENCY_PREFIX = "agency-"
CREDENTIAL_FIELDS = ("username", "password", "role", "topics")


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """An MQTT account: its name, what it is for, and its ACL lines (access, topic)."""

    username: str
    role: str  # device:{kind}, ioc, simulators, reports-relay, agency:{id}
    acl: tuple[tuple[str, str], ...]

    def topics_text(self) -> str:
        return " ".join(f"{access}:{topic}" for access, topic in self.acl)


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    accounts: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    passwords: Path
    acl: Path
    credentials: Path
    # accounts withheld because their device is decommissioned (revoked if they existed)
    decommissioned: tuple[str, ...] = ()


def plan_accounts(
    site: Site,
    *,
    prefix: str = "hg",
    dispatch_prefix: str = "ioc/dispatch",
    devices: Sequence[Device] | None = None,
    decommissioned: Collection[str] = (),
) -> list[AccountSpec]:
    """Every account the site needs, services first, then devices in site order (``devices``:
    the registry's, which adds those registered through the API to the site file's), except
    the ``decommissioned`` devices'."""
    accounts = [
        AccountSpec(
            IOC_ACCOUNT,
            "ioc",
            (("read", f"{prefix}/#"), ("write", f"{dispatch_prefix}/#")),
        ),
        AccountSpec(SIMULATOR_ACCOUNT, "simulators", (("write", f"{prefix}/#"),)),
        AccountSpec(RELAY_ACCOUNT, "reports-relay", (("write", f"{prefix}/+/{REPORTS}/+"),)),
    ]
    for agency in site.agencies:
        accounts.append(
            AccountSpec(
                f"{AGENCY_PREFIX}{agency.id}",
                f"agency:{agency.id}",
                (("read", f"{dispatch_prefix}/{agency.id}"),),
            )
        )
    taken = {a.username for a in accounts}
    for device in site.devices if devices is None else devices:
        if device.id in decommissioned:
            continue
        if device.id in taken:
            raise ValueError(f"device id {device.id!r} collides with a service account name")
        taken.add(device.id)
        accounts.append(
            AccountSpec(
                device.id,
                f"device:{device.kind}",
                tuple(
                    ("write", device_topic(prefix, device.city, device.kind, device.id, ch))
                    for ch in Channel
                ),
            )
        )
    return accounts


# ----------------------------------------------------------------------- password hashing


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto 2.x stores (what ``mosquitto_passwd`` writes after ``user:``)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``stored`` (a ``$7$`` or ``$6$`` hash) is the hash of ``password``."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, digest = int(parts[2]), parts[3], parts[4]
            key = hashlib.pbkdf2_hmac(
                "sha512", password.encode(), base64.b64decode(salt), iterations, 64
            )
        elif len(parts) == 4 and parts[1] == "6":
            salt, digest = parts[2], parts[3]
            key = hashlib.sha512(password.encode() + base64.b64decode(salt)).digest()
        else:
            return False
        return hmac.compare_digest(key, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


# ----------------------------------------------------------------------------- the files


def read_credentials(path: Path) -> dict[str, str]:
    """username → password from an existing credentials file (empty when there is none)."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["username"]: row["password"] for row in csv.DictReader(fh) if row["username"]}


def _read_password_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        user, sep, stored = line.partition(":")
        if sep and not line.startswith("#"):
            out[user] = stored
    return out


def acl_text(accounts: Iterable[AccountSpec]) -> str:
    lines = [
        "# Written by `ioc devices provision`; edits are overwritten. Mosquitto 2.x acl_file.",
        "# Anonymous clients: no lines here (and allow_anonymous false). Devices write their own",
        "# topics and read nothing; see docs/operations.md, MQTT credentials and ACL.",
        "",
    ]
    for account in accounts:
        lines.append(f"user {account.username}")
        lines.extend(f"topic {access} {topic}" for access, topic in account.acl)
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str, mode: int) -> None:
    """Write atomically with ``mode`` from the start (no window with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def provision(
    site: Site,
    *,
    passwords: Path,
    acl: Path,
    credentials: Path,
    prefix: str = "hg",
    dispatch_prefix: str = "ioc/dispatch",
    devices: Sequence[Device] | None = None,
    decommissioned: Collection[str] = (),
) -> ProvisionResult:
    """Write the three files; idempotent (same site, same files, same passwords)."""
    accounts = plan_accounts(
        site,
        prefix=prefix,
        dispatch_prefix=dispatch_prefix,
        devices=devices,
        decommissioned=decommissioned,
    )
    known = read_credentials(credentials)
    hashes = _read_password_file(passwords)
    wanted = {a.username for a in accounts}
    added: list[str] = []
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=CREDENTIAL_FIELDS, lineterminator="\n")
    writer.writeheader()
    pw_lines = []
    for account in accounts:
        password = known.get(account.username)
        if password is None:
            password = secrets.token_urlsafe(18)
            added.append(account.username)
        stored = hashes.get(account.username)
        if stored is None or not verify_password(password, stored):
            stored = hash_password(password)
        pw_lines.append(f"{account.username}:{stored}\n")
        writer.writerow(
            {
                "username": account.username,
                "password": password,
                "role": account.role,
                "topics": account.topics_text(),
            }
        )
    # credentials first: a crash after it leaves passwords that the next run reuses
    _write(credentials, rows.getvalue(), 0o600)
    _write(passwords, "".join(pw_lines), 0o640)
    _write(acl, acl_text(accounts), 0o644)
    removed = tuple(sorted(u for u in known.keys() | hashes.keys() if u not in wanted))
    withheld = sorted(
        d.id for d in (site.devices if devices is None else devices) if d.id in decommissioned
    )
    return ProvisionResult(
        len(accounts), tuple(added), removed, passwords, acl, credentials, tuple(withheld)
    )
