"""Pack time against `tar -cf` + `openssl dgst -sha256` of the same files, and pack's memory.

Generates N emulated devices (a `show license udi` capture and a signed RUM report each, the
format of `airgap.emulators.device.write_device`), then times

    airgap --home H inside pack --udi DIR --entitlement TAG --rum DIR -o out.airgap

as a child process against `tar -cf` of both folders followed by `openssl dgst -sha256` of every
file, and prints both times, the ratio (target <= 2.0) and airgap's peak RSS (the largest of
the child processes, `getrusage(RUSAGE_CHILDREN).ru_maxrss`; pack's own process is that one).

    python benchmarks/pack.py                    # 10,000 devices
    python benchmarks/pack.py --devices 100000   # 100,000 devices (the files take ~45 s to write)
    python benchmarks/pack.py --smoke            # 500 devices, one repeat, for CI
    python benchmarks/pack.py --marginal         # also 3x the devices: the ratio without start-up
    python benchmarks/pack.py --devices 100000 --keep /var/tmp/bench   # files kept and reused
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TAG, Run, airgap_command, child_env, make_devices, pack_baseline, run_child


def measure(root: Path, devices: int, repeats: int, airgap: str, openssl: str) -> tuple[Run, Run]:
    """Generate `devices` devices under `root`, print and return (airgap's run, the baseline's)."""
    from airgap.home import init_home

    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reused = (root / "udi").is_dir()
    udi, rum = make_devices(root, devices)
    size = sum(p.stat().st_size for folder in (udi, rum) for p in folder.iterdir())
    how = "reused" if reused else f"generated in {time.perf_counter() - started:.1f} s"
    print(f"{devices} devices: {2 * devices} files, {size / 2**20:.1f} MiB ({how})")
    home = root / "home"
    shutil.rmtree(home, ignore_errors=True)
    init_home(home, role="inside", name="bench", passphrase=None)
    env = child_env()
    theirs_command = pack_baseline(root, udi, rum, openssl)
    runs: list[Run] = []
    their_runs: list[Run] = []
    # Taken in turns, so a noisy spell of the machine lands on both sides alike.
    for n in range(repeats):
        output = root / f"req-{n}.airgap"
        output.unlink(missing_ok=True)
        command = [
            airgap, "--home", str(home), "--quiet", "inside", "pack",
            "--udi", str(udi), "--entitlement", TAG, "--rum", str(rum), "-o", str(output),
        ]  # fmt: skip
        runs.append(run_child(command, env=env))
        their_runs.append(run_child(theirs_command))
    ours = Run(min(r.seconds for r in runs), max(r.max_rss_mib for r in runs))
    theirs = Run(min(r.seconds for r in their_runs), max(r.max_rss_mib for r in their_runs))
    bundle = (root / "req-0.airgap").stat().st_size
    print(
        f"airgap inside pack: {ours.seconds:7.3f} s  (bundle {bundle / 2**20:.1f} MiB, "
        f"peak RSS {ours.max_rss_mib:.1f} MiB)"
    )
    print(f"tar -cf + openssl dgst -sha256: {theirs.seconds:7.3f} s")
    # The largest child so far: airgap's pack is far larger than tar or openssl.
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of the child processes (getrusage RUSAGE_CHILDREN): {children:.1f} MiB")
    return ours, theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="devices (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--smoke", action="store_true", help="500 devices, one repeat")
    parser.add_argument(
        "--marginal",
        action="store_true",
        help="also measure 3x the devices and print the ratio of the differences (start-up out)",
    )
    parser.add_argument("--keep", type=Path, help="keep the generated files and bundles here")
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.repeats = 500, 1
    openssl, airgap = shutil.which("openssl"), airgap_command()
    if not openssl or not airgap or not shutil.which("tar"):
        print("needs tar, openssl and the installed airgap command", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="airgap-bench-pack-") as tmp:
        root = args.keep or Path(tmp)
        ours, theirs = measure(root / "n", args.devices, args.repeats, airgap, openssl)
        print(f"ratio airgap/baseline = {ours.seconds / theirs.seconds:.2f} (target <= 2.0)")
        if args.smoke:
            print("(smoke run: at 500 devices the ratio measures start-up, not pack)")
        print(f"peak RSS airgap inside pack = {ours.max_rss_mib:.1f} MiB")
        if args.marginal:
            more, their_more = measure(root / "3n", 3 * args.devices, args.repeats, airgap, openssl)
            marginal = (more.seconds - ours.seconds) / (their_more.seconds - theirs.seconds)
            print(
                f"marginal ratio {args.devices} -> {3 * args.devices} devices = {marginal:.2f} "
                "(start-up excluded; the targets are the ratios at 10,000 and 100,000)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
