"""`airgap --help` cold start (target < 0.5 s in docs/performance.md), against `python -c pass`.

    python benchmarks/startup.py             # best of 10
    python benchmarks/startup.py --smoke     # best of 3 (CI)

The interpreter's own start is printed beside it so a slow machine is visible as such; the
target is on airgap's absolute time, since that is what a user waits for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import airgap_command, best_of, child_env

TARGET_SECONDS = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs of each; the best counts")
    parser.add_argument("--smoke", action="store_true", help="3 runs")
    args = parser.parse_args()
    repeats = 3 if args.smoke else args.repeats
    airgap = airgap_command()
    if airgap is None:
        raise SystemExit("airgap is not installed in this environment")
    env = child_env()
    best_of(1, [airgap, "--help"], env=env)  # compile bytecode of an editable install once
    interpreter = best_of(repeats, [sys.executable, "-c", "pass"], env=env)
    ours = best_of(repeats, [airgap, "--help"], env=env)
    verdict = "met" if ours.seconds < TARGET_SECONDS else "NOT met"
    print(f"python -c pass   {interpreter.seconds:6.3f} s  {interpreter.max_rss_mib:5.1f} MiB")
    print(f"airgap --help    {ours.seconds:6.3f} s  {ours.max_rss_mib:5.1f} MiB")
    print(f"target: airgap --help < {TARGET_SECONDS} s: {verdict}")


if __name__ == "__main__":
    main()
