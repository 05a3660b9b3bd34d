"""`airgap kit build`: everything a disconnected machine needs to install airgap, in one tar.

The kit is itself a signed bundle of kind `kit` (so `airgap verify airgap-kit.tar` checks it),
laid out so that stock tools are enough inside the gap: `install.sh` and `README.txt` at the
top, `SHA256SUMS` listing every file, and `wheels/` holding airgap's own wheel and every
dependency wheel for the target platform and Python. `install.sh` refuses before pip runs
when any file differs from `SHA256SUMS`, or `SHA256SUMS` from the signed manifest.

Left out: Python and pip themselves (the target needs `python3` with pip, or `python3 -m venv`),
and source distributions (only wheels, so nothing is compiled inside the gap).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from airgap import __version__
from airgap.bundle import write_bundle_file
from airgap.bundle.manifest import (
    ITEMS_NAME,
    KIT_KIND,
    SUMS_NAME,
    Manifest,
    MemberEntry,
    summarize,
    sums_text,
)
from airgap.bundle.names import check_member_name
from airgap.bundle.writer import items_bytes
from airgap.errors import ConfigError, KitError, UnsafeMember
from airgap.home import Home
from airgap.keys import Signer, fp16
from airgap.schema import validate
from airgap.units import format_timestamp, utc_now

PipRunner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]
Say = Callable[[str], None]

DEFAULT_KIT_LIFETIME = timedelta(days=365)
INSTALL_NAME = "install.sh"
README_NAME = "README.txt"
WHEELS_DIR = "wheels"
PIP_TIMEOUT = 1800.0  # seconds for one pip run (a slow mirror, a large dependency)


@dataclass(frozen=True)
class KitResult:
    """What `build_kit` wrote: the tar, its identity, and the wheels it carries."""

    path: Path
    bundle_id: str
    manifest_sha256: str
    airgap_version: str
    platform: str
    python: str
    wheels: list[str]
    size: int

    def to_json(self) -> dict[str, Any]:
        """The result as plain JSON types (for `--json`)."""
        return {
            "file": str(self.path),
            "bundle_id": self.bundle_id,
            "manifest_sha256": self.manifest_sha256,
            "airgap_version": self.airgap_version,
            "platform": self.platform,
            "python": self.python,
            "wheels": self.wheels,
            "size": self.size,
        }


def _is_checkout(root: Path) -> bool:
    """Whether `root` holds the source of this very airgap (name and version match)."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["project"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(project.get("name") == "airgap" and project.get("version") == __version__)


def project_root(package_dir: Path | None = None, *, search_from: Path | None = None) -> Path:
    """The source checkout to build airgap's own wheel from.

    That is the folder above the running package when it runs from a checkout (`pip install
    -e .`); otherwise (installed with `pip install .`) the checkout it was installed from, found
    by looking in `search_from` (default: the current folder) and the folders above it.

    Args:
        package_dir: the `airgap` package folder (default: where this module lives).
        search_from: where to look for the checkout when the package is not in one.

    Raises:
        KitError: no checkout of this airgap version is found.
    """
    package = package_dir or Path(__file__).resolve().parent
    if _is_checkout(package.parent):
        return package.parent
    start = (search_from or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if _is_checkout(folder):
            return folder
    raise KitError(
        f"airgap runs from {package}, not from a source checkout, and {start} is not inside "
        f"a checkout of airgap {__version__}: there is no source to build its own wheel from",
        hint="Run `airgap kit build` inside the airgap checkout it was installed from.",
    )


def _run_pip(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=PIP_TIMEOUT,
        check=False,
    )


def _pip(runner: PipRunner, args: Sequence[str], what: str) -> None:
    try:
        done = runner(args)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KitError(f"pip could not {what}: {exc}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), None)
        reason = reason or next((line for line in reversed(lines) if line), "no output")
        raise KitError(
            f"pip could not {what}: {reason[:300]}",
            hint="pip needs the package index (or PIP_INDEX_URL pointing at a mirror); "
            "check --platform and --python name a target that has wheels.",
        )


def _wheel_item(index: int, member: str) -> dict[str, Any]:
    fields = Path(member).name[: -len(".whl")].split("-")
    return {
        "id": f"w{index:03d}",
        "action": "kit.wheel",
        "device": None,
        "params": {"project": fields[0], "version": fields[1], "tags": "-".join(fields[-3:])},
        "files": [member],
    }


def build_kit(
    home: Home,
    output: Path,
    *,
    platforms: Sequence[str] = (),
    python: str | None = None,
    lifetime: timedelta = DEFAULT_KIT_LIFETIME,
    runner: PipRunner = _run_pip,
    package_dir: Path | None = None,
    say: Say | None = None,
) -> KitResult:
    """Build airgap's wheel, download its dependency wheels, and write the signed kit tar.

    Args:
        home: the home that signs the kit (either role).
        output: the tar to write (replaced atomically if it exists).
        platforms: pip platform tags of the target, e.g. `manylinux2014_x86_64`; none: this
            machine's platform.
        python: the target's Python version, e.g. `3.11`; None: this interpreter's.
        lifetime: how long `airgap verify` accepts the kit.
        runner: runs `python -m pip ARGS` (tests may substitute it).
        package_dir: the `airgap` package folder (default: this installation's).
        say: called with a line of progress for the operator.

    Raises:
        KitError: not a source checkout, or pip failed to build or download a wheel.
        ConfigError: the lifetime is not positive, or the signing key cannot be loaded.
        AuthError: the signing key's passphrase is wrong.

    Returns:
        The kit written and what it holds.
    """
    tell = say or (lambda _: None)
    if lifetime <= timedelta(0):
        raise ConfigError(f"the kit's lifetime must be positive, not {lifetime}")
    root = project_root(package_dir)
    signer = home.signer()  # ask for the passphrase before minutes of downloading
    target_python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    target_platform = ", ".join(platforms) or f"{sysconfig.get_platform()} (the building machine)"
    with tempfile.TemporaryDirectory(prefix="airgap-kit-") as tmp:
        wheels = Path(tmp) / WHEELS_DIR
        wheels.mkdir()
        tell(f"Building airgap's wheel from {root}")
        build = ["wheel", "--no-deps", "--wheel-dir", str(wheels), str(root)]
        if importlib.util.find_spec("hatchling") is not None:
            build.insert(1, "--no-build-isolation")  # the backend is here: no download needed
        _pip(runner, build, "build airgap's wheel")
        own = sorted(wheels.glob("airgap-*.whl"))
        if len(own) != 1:
            raise KitError(f"pip built {len(own)} airgap wheels where one was expected")
        tell(f"Downloading dependency wheels for {target_platform}, Python {target_python}")
        download = ["download", "--only-binary=:all:", "--dest", str(wheels)]
        for platform in platforms:
            download += ["--platform", platform]
        if platforms or python:
            download += ["--python-version", target_python, "--implementation", "cp"]
        _pip(runner, [*download, str(own[0])], "download the dependency wheels")
        return _write_kit(
            home,
            signer,
            output,
            wheels,
            platform=target_platform,
            python=target_python,
            lifetime=lifetime,
        )


def _write_kit(
    home: Home,
    signer: Signer,
    output: Path,
    wheels: Path,
    *,
    platform: str,
    python: str,
    lifetime: timedelta,
) -> KitResult:
    found = sorted(p for p in wheels.iterdir() if p.is_file())
    strays = [p.name for p in found if not p.name.endswith(".whl")]
    if strays:
        raise KitError(f"pip left files that are not wheels: {', '.join(strays[:3])}")
    members = [f"{WHEELS_DIR}/{p.name}" for p in found]
    for member in members:
        try:
            check_member_name(member)
        except UnsafeMember:
            raise KitError(f"the wheel name {member!r} cannot be carried in a bundle") from None
    created = utc_now()
    install = install_script(__version__).encode("utf-8")
    readme = readme_text(
        version=__version__,
        platform=platform,
        python=python,
        name=signer.name,
        fingerprint=signer.fingerprint,
        created=format_timestamp(created),
    ).encode("utf-8")
    items: list[dict[str, Any]] = [
        {
            "id": "kit",
            "action": "kit.target",
            "device": None,
            "params": {
                "airgap_version": __version__,
                "platform": platform[:200],
                "python": python,
                "install": f"sh {INSTALL_NAME}",
            },
            "files": [INSTALL_NAME, README_NAME],
        },
        *(_wheel_item(n, member) for n, member in enumerate(members, start=1)),
    ]
    validate("kit-items", {"items": items}, what=ITEMS_NAME)
    data = items_bytes(items)
    body: list[tuple[MemberEntry, Path | bytes]] = [
        (MemberEntry(ITEMS_NAME, hashlib.sha256(data).hexdigest(), len(data)), data),
        (MemberEntry(INSTALL_NAME, hashlib.sha256(install).hexdigest(), len(install)), install),
        (MemberEntry(README_NAME, hashlib.sha256(readme).hexdigest(), len(readme)), readme),
    ]
    for path, member in zip(found, members, strict=True):
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        body.append((MemberEntry(member, digest, path.stat().st_size), path))
    sums = sums_text([entry for entry, _ in body])
    payload = [(MemberEntry(SUMS_NAME, hashlib.sha256(sums).hexdigest(), len(sums)), sums), *body]
    manifest = Manifest(
        bundle_id=str(uuid.uuid4()),
        kind=KIT_KIND,
        created=created,
        expires=created + timedelta(seconds=int(lifetime.total_seconds())),
        producer={"name": signer.name, "role": signer.role, "fingerprint": signer.fingerprint},
        sequence=0,
        in_reply_to=None,
        audit_head=home.audit().head(),
        summary=summarize(items),
        members=tuple(entry for entry, _ in payload),
    )
    manifest_bytes = manifest.to_canonical_bytes()
    size = write_bundle_file(
        output,
        manifest_bytes=manifest_bytes,
        signatures={fp16(signer.fingerprint): signer.sign(manifest_bytes)},
        payload=payload,
        mtime=int(created.timestamp()),
        compress=False,
        encrypt_to=(),
    )
    result = KitResult(
        path=output,
        bundle_id=manifest.bundle_id,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        airgap_version=__version__,
        platform=platform,
        python=python,
        wheels=[Path(m).name for m in members],
        size=size,
    )
    home.audit().append(
        "kit_build",
        bundle_id=result.bundle_id,
        manifest_sha256=result.manifest_sha256,
        details={
            "file": output.name,
            "airgap_version": __version__,
            "platform": platform,
            "python": python,
            "wheels": result.wheels,
            "size": size,
        },
    )
    return result


def install_script(version: str) -> str:
    """The POSIX `install.sh` of a kit: check every file, then pip install without an index."""
    return _INSTALL_SH.replace("@VERSION@", version)


def readme_text(
    *, version: str, platform: str, python: str, name: str, fingerprint: str, created: str
) -> str:
    """The kit's `README.txt`: what it is, how to install it, how to check it."""
    return _README.format(
        version=version,
        platform=platform,
        python=python,
        name=name,
        fingerprint=fingerprint,
        fp16=fp16(fingerprint),
        created=created,
    )


# The checks run before pip, in this order: the signature (when a public key is given), then
# SHA256SUMS against the signed manifest, every listed file against SHA256SUMS, and no unlisted
# file in wheels/ (pip would pick up any wheel lying there). `cut -c 67-` skips the 64 hex
# digits and two spaces of a SHA256SUMS line; the path is compared as a fixed, whole string.
_INSTALL_SH = """\
#!/bin/sh
# Install airgap @VERSION@ from this offline kit. No package index is used or needed.
#
#   sh install.sh [PIP OPTIONS]          e.g.  PYTHON=/opt/airgap/bin/python sh install.sh
#
# PYTHON            the interpreter to install into (default: python3)
# AIRGAP_KIT_PUBKEY the builder's Ed25519 public key (PEM); manifest.json's signature is then
#                   checked with openssl 3 before anything else
#
# Every check runs before pip; any mismatch stops here and nothing is installed.
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

refuse() {
    echo "install.sh: REFUSED: $*" >&2
    echo "install.sh: nothing was installed." >&2
    exit 1
}

command -v sha256sum >/dev/null 2>&1 || refuse "sha256sum is not available"
[ -f SHA256SUMS ] && [ -f manifest.json ] || refuse "run me inside the unpacked kit"

if [ -n "${AIRGAP_KIT_PUBKEY:-}" ]; then
    command -v openssl >/dev/null 2>&1 || refuse "AIRGAP_KIT_PUBKEY is set, openssl is missing"
    verified=0
    for sig in signatures/*.sig; do
        if openssl pkeyutl -verify -pubin -inkey "$AIRGAP_KIT_PUBKEY" -rawin \\
            -in manifest.json -sigfile "$sig" >/dev/null 2>&1; then
            verified=1
        fi
    done
    [ "$verified" = 1 ] || refuse "no signature verifies manifest.json with $AIRGAP_KIT_PUBKEY"
    echo "install.sh: manifest.json is signed by the key in $AIRGAP_KIT_PUBKEY"
fi

sums=$(sha256sum SHA256SUMS | cut -d ' ' -f 1)
grep -q "\\"path\\":\\"SHA256SUMS\\",\\"sha256\\":\\"$sums\\"" manifest.json \\
    || refuse "SHA256SUMS differs from the one manifest.json lists (the kit was altered)"

if ! report=$(sha256sum -c SHA256SUMS 2>&1); then
    printf '%s\\n' "$report" | grep -v ': OK$' >&2 || true
    refuse "files differ from SHA256SUMS (the kit was altered or damaged in transit)"
fi

for wheel in wheels/*; do
    cut -c 67- SHA256SUMS | grep -F -x -q -- "$wheel" \\
        || refuse "$wheel is not listed in SHA256SUMS"
done

echo "install.sh: every file matches SHA256SUMS; installing airgap @VERSION@ with $PYTHON"
exec "$PYTHON" -m pip install --no-index --find-links wheels/ "$@" "airgap==@VERSION@"
"""

_README = """\
airgap {version} offline install kit
====================================

For: {platform}, Python {python}.
Built {created} and signed by {name} ({fingerprint}).

Install on the disconnected machine (needs python3 with pip, or python3 -m venv, and
sha256sum; no package index):

    mkdir airgap-kit && tar -xf airgap-kit.tar -C airgap-kit && cd airgap-kit
    python3 -m venv /opt/airgap                    # recommended: a venv of its own
    PYTHON=/opt/airgap/bin/python sh install.sh
    /opt/airgap/bin/airgap --version

install.sh checks SHA256SUMS against manifest.json, every file against SHA256SUMS, and that
wheels/ holds nothing unlisted, and refuses before pip runs if anything differs.

Checking who built it (recommended): the kit is a signed airgap bundle of kind "kit". Save
the "ed25519_public_key" of {name}'s site card as builder.pub.pem (compare the fingerprint
{fingerprint} out of band), then either

    AIRGAP_KIT_PUBKEY=builder.pub.pem sh install.sh      # openssl 3 checks the signature
    openssl pkeyutl -verify -pubin -inkey builder.pub.pem -rawin \\
        -in manifest.json -sigfile signatures/{fp16}.sig

or, where airgap is already installed and trusts {name}: airgap verify airgap-kit.tar
"""
