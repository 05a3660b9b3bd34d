"""Verify throughput against `openssl dgst -sha256` on the same bytes; target: docs/performance.md.

Builds two bundles (default 256 MiB and 1 GiB), times `airgap verify` and
`openssl dgst -sha256` on each, and reports the marginal rates (bytes between the two sizes
divided by the time between them, so start-up cost cancels out), their ratio (target >= 0.85)
and airgap's peak RSS (target < 150 MiB).

    python benchmarks/verify.py            # full run
    python benchmarks/verify.py --smoke    # 16 MiB and 64 MiB, for CI
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import airgap_command, best_of, child_env

MIB = 1024 * 1024


def make_source(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as handle:
        for _ in range(size // MIB):
            handle.write(block)


def build(home: Path, source: Path, out: Path) -> None:
    from airgap.bundle import PayloadFile, build_bundle
    from airgap.home import Home
    from airgap.units import utc_now

    opened = Home.open(home)
    now = utc_now()
    item = {
        "id": "rum-1",
        "action": "cisco.report_usage",
        "device": {"hostname": "sw-1", "udi": {"pid": "C9300-24T", "sn": "FOC0000001"}},
        "params": {},
        "files": ["files/rum/big.bin"],
    }
    build_bundle(
        out,
        kind="request",
        items=[item],
        files=[PayloadFile("files/rum/big.bin", source)],
        signers=[opened.signer()],
        sequence=1,
        created=now,
        expires=now + timedelta(days=1),
        audit_head=opened.audit().head(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=256, help="MiB (default 256)")
    parser.add_argument("--large", type=int, default=1024, help="MiB (default 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="16 and 64 MiB, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.small, args.large, args.repeats = 16, 64, 1
    openssl = shutil.which("openssl")
    airgap = airgap_command()
    if not openssl or not airgap:
        print("needs openssl and the installed airgap command", file=sys.stderr)
        return 1
    from airgap.home import init_home

    with tempfile.TemporaryDirectory(prefix="airgap-bench-") as tmp:
        root = Path(tmp)
        init_home(root / "home", role="inside", name="bench", passphrase=None)
        env = child_env()
        results = {}
        for label, mib in (("small", args.small), ("large", args.large)):
            source = root / f"{label}.bin"
            make_source(source, mib * MIB)
            bundle = root / f"{label}.airgap"
            build(root / "home", source, bundle)
            source.unlink()
            size = bundle.stat().st_size
            ours = best_of(
                args.repeats, [airgap, "--home", str(root / "home"), "verify", str(bundle)], env=env
            )
            theirs = best_of(args.repeats, [openssl, "dgst", "-sha256", str(bundle)])
            results[label] = (size, ours, theirs)
            print(
                f"{label}: {size / MIB:8.1f} MiB  airgap verify {ours.seconds:7.3f} s "
                f"(peak RSS {ours.max_rss_mib:6.1f} MiB)  openssl dgst {theirs.seconds:7.3f} s"
            )
        (s_size, s_ours, s_theirs), (l_size, l_ours, l_theirs) = results["small"], results["large"]
        delta = (l_size - s_size) / MIB
        ours_rate = delta / max(l_ours.seconds - s_ours.seconds, 1e-9)
        theirs_rate = delta / max(l_theirs.seconds - s_theirs.seconds, 1e-9)
        peak = max(s_ours.max_rss_mib, l_ours.max_rss_mib)
        print(
            f"marginal rate: airgap verify {ours_rate:8.1f} MiB/s, "
            f"openssl dgst {theirs_rate:8.1f} MiB/s"
        )
        print(f"ratio airgap/openssl = {ours_rate / theirs_rate:.3f} (target >= 0.85)")
        print(f"peak RSS airgap verify = {peak:.1f} MiB (target < 150)")
        if args.smoke:
            print("(smoke run: 16 and 64 MiB are too small to judge the rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
