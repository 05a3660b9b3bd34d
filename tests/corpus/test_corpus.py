"""The hostile bundles of tests/corpus, each refused by the real `airgap verify` with its code.

The verifying home is an outside site made by `init_home` that trusts the corpus's fixed keys
through its trust store, as `airgap trust add CARD` would, and has trusted and then removed the
revoked key. Each bundle is verified where it lies, by a subprocess started in an empty folder;
afterwards neither the corpus folder nor that folder holds anything new.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import run_airgap

from airgap.home import Home, init_home
from airgap.trust import SiteCard

CORPUS = Path(__file__).resolve().parent
EXPECTED: dict[str, str] = json.loads((CORPUS / "expected.json").read_text())


def _load_script() -> ModuleType:
    name = "airgap_corpus_script"
    spec = importlib.util.spec_from_file_location(name, CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


corpus = _load_script()
CONTROLS = sorted(case.file for case in corpus.CASES if case.code is None)
BUNDLES = sorted([*EXPECTED, *CONTROLS])


def card(site: Any) -> SiteCard:
    """The site card `airgap key export` would write for a corpus site."""
    document = {
        "format": "airgap-site-card/1",
        "name": site.name,
        "role": site.role,
        "ed25519_public_key": site.public_pem,
        "age_recipient": site.age_recipient,
        "fingerprint": site.fingerprint,
    }
    return SiteCard.from_json(document, source=f"{site.name}.card.json")


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Name → (size, mtime) of everything in `folder` but Python's caches."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outside home trusting the corpus's inside and outside keys, but no longer the revoked."""
    root = tmp_path_factory.mktemp("corpus-home") / "home"
    init_home(root, role="outside", name="corpus-verifier", passphrase=None)
    store = Home.open(root).trust_store()
    for site in (*corpus.TRUSTED, corpus.REVOKED):
        store.add(card(site))
    store.remove(corpus.REVOKED.fingerprint)
    fingerprints = {key.fingerprint for key in Home.open(root).trust_store().peers()}
    assert fingerprints == {site.fingerprint for site in corpus.TRUSTED}
    return root


@pytest.fixture(scope="module")
def verdicts(
    verifier: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[subprocess.CompletedProcess[str], Path]]]:
    """`airgap --json verify` of every bundle, six at a time; each run in its own empty folder."""
    env = {"AIRGAP_HOME": str(verifier), "AIRGAP_BUNDLE_MAX_BYTES": corpus.SIZE_LIMIT}
    before = listing(CORPUS)

    def verify(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        cwd = tmp_path_factory.mktemp("cwd")
        return run_airgap("--json", "verify", str(CORPUS / name), env=env, cwd=cwd), cwd

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = dict(zip(BUNDLES, pool.map(verify, BUNDLES), strict=True))
    assert listing(CORPUS) == before, "airgap verify wrote next to the corpus files"
    yield results


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_bundle_is_refused_with_its_code(
    verdicts: dict[str, tuple[subprocess.CompletedProcess[str], Path]], name: str
) -> None:
    result, cwd = verdicts[name]
    assert result.returncode == 3, result.stdout + result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["ok"] is False
    assert outcome["error"]["code"] == EXPECTED[name], outcome["error"]["message"]
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("name", CONTROLS)
def test_control_bundle_verifies(
    verdicts: dict[str, tuple[subprocess.CompletedProcess[str], Path]], name: str
) -> None:
    result, cwd = verdicts[name]
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True
    assert list(cwd.iterdir()) == []


def test_every_refusal_is_in_the_audit_log_and_the_log_verifies(
    verdicts: dict[str, tuple[subprocess.CompletedProcess[str], Path]], verifier: Path
) -> None:
    lines = (verifier / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    refused = sorted(
        (e["details"]["file"], e["details"]["code"]) for e in entries if e["event"] == "refusal"
    )
    assert refused == sorted(EXPECTED.items())
    assert sorted(e["details"]["file"] for e in entries if e["event"] == "verify") == CONTROLS
    audit = run_airgap("audit", "verify", env={"AIRGAP_HOME": str(verifier)})
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_corpus_lists_every_file_and_stays_small() -> None:
    on_disk = sorted(p.name for p in CORPUS.glob("*.airgap"))
    assert on_disk == BUNDLES
    readme = (CORPUS / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in BUNDLES)
    assert sum((CORPUS / name).stat().st_size for name in BUNDLES) < 1024 * 1024


def _digest_unzipped(path: Path) -> str:
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_script_still_writes_the_committed_corpus(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    for name in [*BUNDLES, "expected.json", "README.md"]:
        fresh, committed = tmp_path / name, CORPUS / name
        if name == "gzip-bomb.airgap":  # compressed bytes differ between zlib builds
            assert _digest_unzipped(fresh) == _digest_unzipped(committed), name
        else:
            assert fresh.read_bytes() == committed.read_bytes(), name
