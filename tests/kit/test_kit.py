"""`airgap kit build`: a kit built on this machine installs into a fresh venv with no package
index; install.sh refuses a tampered kit before pip runs; the kit is a signed `kit` bundle.

The first tests build one real kit (pip needs the package index for that step, as in CI) and
share it; the rest use a stand-in for pip.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import REPO, require_tool, run_airgap

from airgap import __version__
from airgap.bundle import verify_bundle
from airgap.errors import VerificationError
from airgap.home import Home, init_home
from airgap.keys import Signer
from airgap.kit import KitError, build_kit, project_root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(builder home, kit tar) built once by the real command for this machine."""
    root = tmp_path_factory.mktemp("kit")
    home = root / "builder-home"
    init_home(home, role="outside", name="builder", passphrase=None)
    kit = root / "airgap-kit.tar"
    result = run_airgap("--home", str(home), "kit", "build", "-o", str(kit), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return home, kit


def _unpack(kit: Path, into: Path) -> Path:
    into.mkdir()
    with tarfile.open(kit) as tar:
        tar.extractall(into, filter="data")
    return into


def _install_env(python: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRGAP_", "PIP_"))}
    # Any attempt to reach a package index would fail: nothing listens there.
    env.update(PYTHON=str(python), PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_CACHE_DIR="1")
    return env


def _stub_python(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for python that only records that it was run (pip would have run)."""
    marker = tmp_path / "pip-ran"
    stub = tmp_path / "stub-python"
    stub.write_text(f'#!/bin/sh\necho "$@" > {marker}\n')
    stub.chmod(0o755)
    return stub, marker


def _install(kit_dir: Path, python: Path | str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**_install_env(python), **extra}
    return subprocess.run(
        ["sh", str(kit_dir / "install.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd=kit_dir.parent,
        timeout=600,
    )


def test_kit_built_here_installs_into_a_fresh_venv_without_an_index(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, kit = built
    kit_dir = _unpack(kit, tmp_path / "kit")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    result = _install(kit_dir, venv / "bin" / "python")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every file matches SHA256SUMS" in result.stdout
    version = subprocess.run(
        [str(venv / "bin" / "airgap"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_install_env(venv / "bin" / "python"),
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"airgap {__version__}"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import airgap; print(airgap.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_install_env(venv / "bin" / "python"),
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # not the source checkout


def test_kit_is_one_tar_with_install_sh_and_readme_at_the_top(built: tuple[Path, Path]) -> None:
    _, kit = built
    with tarfile.open(kit) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert {"install.sh", "README.txt", "SHA256SUMS", "items.json"} <= set(names)
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")]
    wheels = [n for n in names if n.startswith("wheels/")]
    assert f"wheels/airgap-{__version__}-py3-none-any.whl" in wheels
    assert any(n.startswith("wheels/cryptography-") for n in wheels)
    assert all(n.endswith(".whl") for n in wheels)


def test_kit_verifies_as_a_signed_kit_bundle_against_the_trust_store(
    built: tuple[Path, Path], make_home: Callable[..., Path]
) -> None:
    builder, kit = built
    own = run_airgap("--json", "--home", str(builder), "verify", str(kit))
    assert own.returncode == 0, own.stdout + own.stderr
    assert json.loads(own.stdout)["kind"] == "kit"
    # A kit from an outside builder verifies in an inside home that trusts it, and only then.
    inside = make_home("inside", name="lab")
    refused = run_airgap("--json", "--home", str(inside), "verify", str(kit))
    assert refused.returncode == 3
    assert json.loads(refused.stdout)["error"]["code"] == "E_UNTRUSTED_KEY"
    Home.open(inside).trust_store().add(Home.open(builder).card())
    trusted = run_airgap("--json", "--home", str(inside), "verify", str(kit))
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr


def test_a_tampered_wheel_stops_install_sh_before_pip(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, kit = built
    kit_dir = _unpack(kit, tmp_path / "kit")
    wheel = next((kit_dir / "wheels").glob("requests-*.whl"))
    with wheel.open("ab") as handle:
        handle.write(b"\0")
    stub, marker = _stub_python(tmp_path)
    result = _install(kit_dir, stub)
    assert result.returncode != 0
    assert "REFUSED" in result.stderr and wheel.name in result.stdout + result.stderr
    assert not marker.exists()


def test_an_unlisted_wheel_stops_install_sh_before_pip(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, kit = built
    kit_dir = _unpack(kit, tmp_path / "kit")
    (kit_dir / "wheels" / "requests-99.0-py3-none-any.whl").write_bytes(b"PK\x03\x04")
    stub, marker = _stub_python(tmp_path)
    result = _install(kit_dir, stub)
    assert result.returncode != 0
    assert "requests-99.0-py3-none-any.whl is not listed" in result.stderr
    assert not marker.exists()


def test_sha256sums_rewritten_to_match_a_tampered_wheel_is_caught_by_the_manifest(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    _, kit = built
    kit_dir = _unpack(kit, tmp_path / "kit")
    wheel = next((kit_dir / "wheels").glob("idna-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    sums = kit_dir / "SHA256SUMS"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lines = [
        f"{digest}  wheels/{wheel.name}" if line.endswith(wheel.name) else line
        for line in sums.read_text().splitlines()
    ]
    sums.write_text("\n".join(lines) + "\n")
    stub, marker = _stub_python(tmp_path)
    result = _install(kit_dir, stub)
    assert result.returncode != 0
    assert "SHA256SUMS differs from the one manifest.json lists" in result.stderr
    assert not marker.exists()


def test_install_sh_checks_the_signature_when_given_the_builders_key(
    built: tuple[Path, Path], tmp_path: Path, make_home: Callable[..., Path]
) -> None:
    require_tool("openssl")
    builder, kit = built
    kit_dir = _unpack(kit, tmp_path / "kit")
    stub, marker = _stub_python(tmp_path)
    other = make_home("outside", name="other")
    wrong = _install(kit_dir, stub, AIRGAP_KIT_PUBKEY=str(Home.open(other).paths.signing_pub))
    assert wrong.returncode != 0, wrong.stdout + wrong.stderr
    assert "no signature verifies manifest.json" in wrong.stderr
    assert not marker.exists()
    right = _install(kit_dir, stub, AIRGAP_KIT_PUBKEY=str(Home.open(builder).paths.signing_pub))
    assert right.returncode == 0, right.stdout + right.stderr
    assert marker.read_text().split() == [
        "-m", "pip", "install", "--no-index", "--find-links", "wheels/",
        f"airgap=={__version__}",
    ]  # fmt: skip


# --- with a stand-in for pip ---------------------------------------------------------------


def fake_pip(calls: list[list[str]], *, fail: str | None = None) -> Callable[..., object]:
    """Writes small stand-in wheels where pip would; `fail` makes that pip step fail."""

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        if fail == args[0]:
            return subprocess.CompletedProcess(
                list(args), 1, "", "Collecting x\nERROR: No matching distribution found for x\n"
            )
        folder = Path(args[args.index("--wheel-dir" if args[0] == "wheel" else "--dest") + 1])
        name = f"airgap-{__version__}-py3-none-any.whl" if args[0] == "wheel" else None
        names = [name] if name else ["dep-1.0-py3-none-any.whl", "other_dep-2.1-cp311-abi3-x.whl"]
        for wheel in names:
            (folder / wheel).write_bytes(f"wheel {wheel}".encode())
        return subprocess.CompletedProcess(list(args), 0, "", "")

    return run


def test_build_kit_asks_pip_for_the_target_and_writes_a_kit_bundle(
    make_home: Callable[..., Path], tmp_path: Path
) -> None:
    home = Home.open(make_home("inside", name="lab"))
    calls: list[list[str]] = []
    result = build_kit(
        home,
        tmp_path / "kit.tar",
        platforms=["manylinux2014_x86_64"],
        python="3.11",
        runner=fake_pip(calls),  # type: ignore[arg-type]
    )
    assert calls[0][0] == "wheel" and calls[0][-1] == str(REPO)
    download = calls[1]
    assert download[:2] == ["download", "--only-binary=:all:"]
    assert download[download.index("--platform") + 1] == "manylinux2014_x86_64"
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download[download.index("--implementation") + 1] == "cp"
    assert download[-1].endswith(f"airgap-{__version__}-py3-none-any.whl")
    assert result.wheels == [
        f"airgap-{__version__}-py3-none-any.whl",
        "dep-1.0-py3-none-any.whl",
        "other_dep-2.1-cp311-abi3-x.whl",
    ]
    opened = verify_bundle(result.path, home.policy())
    assert opened.manifest.kind == "kit"
    assert opened.manifest.in_reply_to is None
    assert opened.manifest.producer["role"] == "inside"
    assert [item["action"] for item in opened.items] == ["kit.target"] + ["kit.wheel"] * 3
    assert opened.items[0]["params"]["platform"] == "manylinux2014_x86_64"
    assert opened.items[2]["params"] == {"project": "dep", "version": "1.0", "tags": "py3-none-any"}
    [entry] = [e for e in home.audit().entries() if e[0]["event"] == "kit_build"]
    assert entry[0]["bundle_id"] == result.bundle_id


def test_a_kit_is_never_taken_for_a_request(
    make_home: Callable[..., Path], exchange_cards: Callable[[Path, Path], None], tmp_path: Path
) -> None:
    from airgap.outside.process import ProcessOptions, process_request

    inside, outside = make_home("inside", name="lab"), make_home("outside", name="dmz")
    exchange_cards(inside, outside)
    kit = build_kit(Home.open(inside), tmp_path / "kit.tar", runner=fake_pip([]))  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as caught:
        process_request(Home.open(outside), kit.path, ProcessOptions(dry_run=True))
    assert caught.value.code == "E_WRONG_ROLE"


def test_a_kit_claiming_another_role_than_its_key_is_refused(
    make_home: Callable[..., Path], tmp_path: Path
) -> None:
    from airgap.kit import _write_kit

    outside = Home.open(make_home("outside", name="dmz"))
    real = outside.signer()
    liar = Signer(
        real.name, "inside", real.private_key
    )  # the outside key, claiming the inside role
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "dep-1.0-py3-none-any.whl").write_bytes(b"w")
    kit = _write_kit(
        outside, liar, tmp_path / "kit.tar", wheels,
        platform="x", python="3.11", lifetime=timedelta(days=1),
    )  # fmt: skip
    with pytest.raises(VerificationError) as caught:
        verify_bundle(kit.path, outside.policy())
    assert caught.value.code == "E_WRONG_ROLE"


def test_pip_failure_is_one_line_with_pips_reason(
    make_home: Callable[..., Path], tmp_path: Path
) -> None:
    home = Home.open(make_home("outside"))
    with pytest.raises(KitError) as caught:
        build_kit(home, tmp_path / "kit.tar", runner=fake_pip([], fail="download"))  # type: ignore[arg-type]
    assert caught.value.code == "E_KIT"
    assert "ERROR: No matching distribution found for x" in caught.value.message
    assert not (tmp_path / "kit.tar").exists()


def test_no_source_checkout_is_refused(tmp_path: Path) -> None:
    site_packages = tmp_path / "site-packages" / "airgap"
    site_packages.mkdir(parents=True)
    with pytest.raises(KitError, match="not from a source checkout"):
        project_root(site_packages, search_from=tmp_path)
    # Installed with `pip install .`: the checkout is found from the current folder.
    assert project_root(site_packages, search_from=REPO / "airgap") == REPO
    assert project_root() == REPO


def test_kit_build_cli_without_a_checkout_exits_1(
    make_home: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import airgap.kit
    from airgap.cli.app import app

    home = make_home("outside")
    fake = tmp_path / "lib" / "airgap"
    fake.mkdir(parents=True)
    monkeypatch.setattr(airgap.kit, "__file__", str(fake / "kit.py"))
    monkeypatch.chdir(tmp_path)  # and not inside the checkout either
    result = CliRunner().invoke(app, ["--home", str(home), "--json", "kit", "build"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["error"]["code"] == "E_KIT"
