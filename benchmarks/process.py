"""`outside process` throughput against the Cisco emulator (target in docs/performance.md).

1,000 `cisco.reserve` items, emulator latency 100 ms, poll delay 1 s. Prints our wall time,
the lower bound `max(calls / rate, calls x latency / concurrency) + poll delay` and their ratio
(target <= 1.3), and the speed-up over one-at-a-time processing (target >= 20x). The
one-at-a-time time is measured on a sample of items done strictly in sequence with the same
client (reserve, wait the poll interval, poll), then scaled to the batch size.

`calls` in the bound is what the work needs, one submit and one poll per reserve (the poll
delay is shorter than the emulator's poll interval, so one poll finds each answer): 2 x items.
It is not the number of calls airgap made, or extra polls would raise the bound and hide
themselves; the calls made are printed beside it.

Two settings: `--settings tuned` (the default) runs `--concurrency 32 --rate 0`, the figure the
target is about; `--settings defaults` passes neither option, so airgap runs at the shipped
`limits.concurrency` 8 and `limits.rate` 5 per second, where the rate limit dominates
(2,000 calls at 5/s: about 400 s at full size).

    python benchmarks/process.py
    python benchmarks/process.py --settings defaults
    python benchmarks/process.py --smoke     # 100 items, latency 20 ms, poll delay 0.2 s
    python benchmarks/process.py --items 10000 --latency-ms 0 --poll-delay 0   # airgap's CPU

It also prints airgap's own CPU per vendor call: the `outside process` child's user + system
time (`wait4`) over the calls the emulator counted. The emulator runs in this script's process,
so none of its CPU is in that figure (target at zero latency: <= 1 ms a call).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import airgap_command, child_env, run_child

SECRETS = {"AIRGAP_CISCO_CLIENT_ID": "bench", "AIRGAP_CISCO_CLIENT_SECRET": "bench-secret"}
TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"


def reserve(n: int) -> dict[str, object]:
    return {
        "id": f"i{n:05d}",
        "action": "cisco.reserve",
        "device": {"hostname": f"sw-{n}", "udi": {"pid": "C9300-24T", "sn": f"FOC{n:08d}"}},
        "params": {"entitlements": [{"tag": TAG, "count": 1}]},
        "files": [],
    }


def lower_bound(
    *, items: int, latency: float, poll_delay: float, concurrency: int, rate: float
) -> float:
    """Seconds no client can beat: the calls the work needs (one submit and one poll per
    reserve), spread over `concurrency` connections of `latency` each or `rate` calls per
    second (0: no limit), whichever is slower, plus one poll delay."""
    calls = 2 * items
    rate_bound = calls / rate if rate > 0 else 0.0
    return max(rate_bound, calls * latency / concurrency) + poll_delay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--poll-delay", type=float, default=1.0)
    parser.add_argument(
        "--settings",
        choices=("tuned", "defaults"),
        default="tuned",
        help="tuned: --concurrency/--rate below; defaults: airgap's shipped limits.* values",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="tuned settings only")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="per second; 0 = unlimited; tuned settings only"
    )
    parser.add_argument("--sample", type=int, default=10, help="items done one at a time")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.latency_ms, args.poll_delay, args.sample = 100, 20.0, 0.2, 3

    from airgap.bundle import build_bundle
    from airgap.config import DEFAULTS, HomePaths, set_value
    from airgap.emulators.cisco import build_cisco_server
    from airgap.home import Home, init_home
    from airgap.outside.cisco import CiscoClient, CiscoSettings
    from airgap.outside.http import RetryPolicy
    from airgap.outside.vendor import WorkItem
    from airgap.units import utc_now

    if args.settings == "defaults":
        concurrency, rate = (
            int(str(DEFAULTS["limits.concurrency"])),
            float(str(DEFAULTS["limits.rate"])),
        )
        limit_options: list[str] = []
        label = f"shipped defaults (limits.concurrency {concurrency}, limits.rate {rate:g}/s)"
    else:
        concurrency, rate = args.concurrency, args.rate
        limit_options = ["--concurrency", str(concurrency), "--rate", str(rate)]
        label = f"tuned (--concurrency {concurrency} --rate {rate:g}" + (
            ", no rate limit)" if rate == 0 else ")"
        )
    airgap = airgap_command()
    if airgap is None:
        print("needs the installed airgap command", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="airgap-bench-") as tmp:
        root = Path(tmp)
        init_home(root / "in", role="inside", name="lab", passphrase=None)
        init_home(root / "out", role="outside", name="dmz", passphrase=None)
        inside, outside = Home.open(root / "in"), Home.open(root / "out")
        inside.trust_store().add(outside.card())
        outside.trust_store().add(inside.card())
        now = utc_now()
        request = root / "req.airgap"
        build_bundle(
            request,
            kind="request",
            items=[reserve(n) for n in range(1, args.items + 1)],
            files=[],
            signers=[inside.signer()],
            sequence=1,
            created=now,
            expires=now + timedelta(days=1),
            audit_head=inside.audit().head(),
        )
        server = build_cisco_server(
            latency_ms=args.latency_ms,
            poll_delay=args.poll_delay,
            licenses=max(1000, args.items + args.sample),  # every reserve can succeed
        ).start()
        try:
            paths = HomePaths(root / "out")
            set_value(paths, "cisco.token_url", f"{server.url}/oauth2/default/v1/token")
            set_value(
                paths, "cisco.api_base", f"{server.url}/services/api/smart-accounts-and-licensing/"
            )
            env = child_env(**SECRETS)
            ours = run_child(
                [
                    airgap,
                    "--home",
                    str(root / "out"),
                    "--json",
                    "outside",
                    "process",
                    str(request),
                    "-o",
                    str(root / "resp.airgap"),
                    *limit_options,
                ],
                env=env,
            )
            calls = json.loads(json.dumps(server.app.stats()["calls"]))
            calls_made = sum(n for name, n in calls.items() if name in ("authrequest", "poll"))
            calls_all = sum(calls.values())  # the token and the account search too
            # One at a time: the same client, one item after the other, honoring poll_interval.
            settings = CiscoSettings.from_config(Home.open(root / "out", env).config)
            client = CiscoClient(settings, retry=RetryPolicy(), limiter=None)
            client.start()
            started = time.perf_counter()
            for n in range(args.items + 1, args.items + 1 + args.sample):
                spec = reserve(n)
                item = WorkItem(str(spec["id"]), "cisco.reserve", spec["device"], spec["params"])  # type: ignore[arg-type]
                outcome = client.submit(item)
                while outcome.status == "pending":
                    time.sleep(outcome.retry_after or 1.0)
                    outcome = client.poll(item, outcome.vendor_ref)
            sequential = (time.perf_counter() - started) / args.sample * args.items
            client.finish()
        finally:
            server.stop()
    latency = args.latency_ms / 1000
    calls_needed = 2 * args.items  # one submit and one poll per reserve
    bound = lower_bound(
        items=args.items,
        latency=latency,
        poll_delay=args.poll_delay,
        concurrency=concurrency,
        rate=rate,
    )
    print(f"settings: {label}")
    print(
        f"items {args.items}, latency {args.latency_ms:.0f} ms, poll delay {args.poll_delay} s, "
        f"concurrency {concurrency}, rate {f'{rate:g}/s' if rate else 'unlimited'}"
    )
    print(
        f"vendor calls needed {calls_needed}, made {calls_made}; airgap outside process "
        f"{ours.seconds:.2f} s (peak RSS {ours.max_rss_mib:.0f} MiB)"
    )
    if bound > 0:
        print(f"lower bound {bound:.2f} s; ratio {ours.seconds / bound:.3f} (target <= 1.3)")
    print(
        f"airgap CPU {ours.cpu_seconds:.2f} s for {calls_all} vendor calls: "
        f"{ours.cpu_seconds / calls_all * 1000:.3f} ms a call (target at zero latency <= 1)"
    )
    print(
        f"one at a time ({args.sample} items measured, scaled): {sequential:.1f} s; "
        f"speed-up {sequential / ours.seconds:.1f}x (target >= 20)"
    )
    if args.smoke:
        print("(smoke run: at 100 items the ratio measures start-up, not processing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
