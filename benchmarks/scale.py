"""Every stage of a many-device round trip at 10,000, 30,000 and 100,000 devices.

Targets: docs/performance.md.

For each size it generates the devices (benchmarks/_common.py `make_devices`: a `show license
udi` capture and a RUM report each, so two items and two attachments per device), then runs
each stage of `STAGES` in turns with its stock-tool baseline (airgap, baseline, airgap, …) and
prints, per size and stage, the best time of each, airgap's peak RSS and the ratio; then the
marginal cost per device between consecutive sizes (start-up cancels out) and the scale
targets:

- peak RSS of each stage at the largest size <= 200 MiB and <= 1.5x its RSS at the smallest;
- verify and `inspect --json` at the largest size <= 2x the baseline (`tar -tf BUNDLE` plus
  `openssl dgst -sha256 BUNDLE`: every header read and every byte hashed once);
- `inside import` of the response <= 3 s and its re-import <= 1 s per 10,000 items (two items
  a device), and import <= 2x its baseline at the largest size.

The import stages need a response: `benchmarks/_importing.py` writes the one `outside process`
would (every item ok, with the Cisco client's `lic.txt` or `ack.xml`), signed by an outside
home the inside home trusts, once per size (untimed). `import` runs on a copy of the inside home
as pack left it, into an empty output folder, each time; `re-import` imports the same response
again into the folder the last import wrote (a no-op that reports where everything stands).
Both have the same baseline, extracting the response with `tar -xf` into an empty folder and
checking it with `sha256sum -c SHA256SUMS`: the stock-tool way to unpack a received bundle and
check its contents. For re-import it is chosen because a re-import must still check the whole
bundle (it only knows the response is a repeat once the signed manifest is read, and a copy
with a tampered member is refused, not waved through); it also writes files, which a
re-import does not, so the absolute target (1 s per 10,000 items) is the bar that matters.

    python benchmarks/scale.py                          # 10,000 / 30,000 / 100,000 devices
    python benchmarks/scale.py --sizes 10000,100000 --repeats 2
    python benchmarks/scale.py --smoke                  # 200 and 600 devices, for CI

Peak RSS comes from `wait4` on each child (the largest process of its tree, as GNU time
reports it). A stage is one `Stage` entry: a name, the airgap command and the baseline command
for a `Setup`; adding a stage (outside process, import, …) is one more entry in `STAGES`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TAG, Run, airgap_command, child_env, make_devices, pack_baseline, run_child

MIB = 1024 * 1024
RSS_CAP = 200.0  # MiB, at the largest size
RSS_GROWTH = 1.5  # largest size's RSS over the smallest's
TIME_RATIO = 2.0  # airgap over its baseline, for the stages that name it
ITEMS_PER_DEVICE = 2  # a reservation and a usage report


@dataclass(frozen=True)
class Setup:
    """Everything a stage's commands need: one size's folders, home and bundle."""

    root: Path
    devices: int
    home: Path
    udi: Path
    rum: Path
    bundle: Path  # written by the pack stage; read by every later one
    airgap: str
    openssl: str


@dataclass(frozen=True)
class Stage:
    """One measured step: airgap's command, its stock-tool baseline, and its time target."""

    name: str
    command: Callable[[Setup], list[str]]
    baseline: Callable[[Setup], list[str]]
    baseline_name: str
    time_target: float | None = None  # ratio to the baseline, at the largest size
    before: Callable[[Setup], None] | None = None  # run (untimed) before each airgap run
    prepare: Callable[[Setup], None] | None = None  # run (untimed) once before the stage
    baseline_before: Callable[[Setup], None] | None = None  # run (untimed) before each baseline
    seconds_per_10k_items: float | None = None  # absolute time target, at every size
    allowed: tuple[int, ...] = (0,)  # exit statuses of a run that went as it should
    # A figure of each airgap run, measured after it (lower is better; the best run counts),
    # with its name and its target at the largest size.
    after: Callable[[Setup, Run], float] | None = None
    figure: str = ""
    figure_target: float | None = None


def _read_baseline(s: Setup) -> list[str]:
    # Every tar header listed and every byte hashed once: the least a full check must do.
    script = f"tar -tf {s.bundle} > /dev/null && {s.openssl} dgst -sha256 {s.bundle} > /dev/null"
    return ["sh", "-c", script]


def _fresh_pack_output(s: Setup) -> None:
    s.bundle.unlink(missing_ok=True)  # pack refuses to overwrite


def _pack(s: Setup) -> list[str]:
    return [
        s.airgap, "--home", str(s.home), "--quiet", "inside", "pack",
        "--udi", str(s.udi), "--entitlement", TAG, "--rum", str(s.rum), "-o", str(s.bundle),
    ]  # fmt: skip


def _verify(s: Setup) -> list[str]:
    return [s.airgap, "--home", str(s.home), "--quiet", "verify", str(s.bundle)]


def _inspect_json(s: Setup) -> list[str]:
    return [s.airgap, "--home", str(s.home), "--json", "inspect", str(s.bundle)]


def _inspect_html(s: Setup) -> list[str]:
    html = s.root / "handoff.html"
    return [
        s.airgap,
        "--home",
        str(s.home),
        "--quiet",
        "inspect",
        str(s.bundle),
        "--html",
        str(html),
    ]


def _response(s: Setup) -> Path:
    return s.root / "resp.airgap"


def _imported(s: Setup) -> Path:
    return s.root / "imported"


def _prepare_response(s: Setup) -> None:
    """The outside home and its response to the last request packed; the home as pack left it."""
    from _importing import make_response

    from airgap.home import Home, init_home

    outside = s.root / "outside"
    if not outside.exists():
        init_home(outside, role="outside", name="bench-dmz", passphrase=None)
        inside_home, outside_home = Home.open(s.home), Home.open(outside)
        inside_home.trust_store().add(outside_home.card())
        outside_home.trust_store().add(inside_home.card())
    _response(s).unlink(missing_ok=True)
    started = time.perf_counter()
    items, files = make_response(outside, s.bundle, _response(s))
    print(
        f"  (response of {items:,} items, {files:,} with a file, written in "
        f"{time.perf_counter() - started:.1f} s)"
    )
    packed = s.root / "home-packed"
    shutil.rmtree(packed, ignore_errors=True)
    shutil.copytree(s.home, packed)


def _fresh_import(s: Setup) -> None:
    shutil.rmtree(s.home)
    shutil.copytree(s.root / "home-packed", s.home)
    shutil.rmtree(_imported(s), ignore_errors=True)


def _import(s: Setup) -> list[str]:
    return [
        s.airgap, "--home", str(s.home), "--quiet", "inside", "import", str(_response(s)),
        "--out", str(_imported(s)),
    ]  # fmt: skip


def _prepare_reimport(s: Setup) -> None:
    if not _imported(s).exists():  # the import stage did not run: import once
        _fresh_import(s)
        run_child(_import(s), env=child_env(), allowed=(0, 4))


def _extract_folder(s: Setup) -> Path:
    return s.root / "extracted"


def _empty_extract_folder(s: Setup) -> None:
    shutil.rmtree(_extract_folder(s), ignore_errors=True)
    _extract_folder(s).mkdir()


def _extract_baseline(s: Setup) -> list[str]:
    # Unpack the response and check every member against SHA256SUMS: the stock tools' import.
    folder = _extract_folder(s)
    script = f"tar -xf {_response(s)} -C {folder} && cd {folder} && sha256sum -c --quiet SHA256SUMS"
    return ["sh", "-c", script]


# --- outside process: zero vendor latency, the Cisco emulator in a process of its own --------

CPU_PER_CALL = 1.0  # ms of airgap's own CPU per vendor call, the target
_CISCO_LOGIN = ("AIRGAP_CISCO_CLIENT_ID=bench", "AIRGAP_CISCO_CLIENT_SECRET=bench-secret")
_emulator: dict[str, Any] = {}  # the Cisco emulator of the run under way: process, URL, CPU


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_before(s: Setup) -> None:
    """A fresh outside home trusting the bundle's signer, and a fresh emulator for it."""
    from airgap.config import HomePaths, set_value
    from airgap.home import Home, init_home

    _stop_emulator()
    outside = s.root / "outside"
    shutil.rmtree(outside, ignore_errors=True)
    (s.root / "resp.airgap").unlink(missing_ok=True)
    init_home(outside, role="outside", name="bench-outside", passphrase=None)
    Home.open(outside).trust_store().add(Home.open(s.home).card())
    # Enough licenses for every device; polls answer at once (the client still waits the 1 s
    # poll interval the emulator asks for).
    command = [s.airgap, "emulate", "cisco", "--port", "0", "--latency", "0", "--poll-delay", "0"]
    proc = subprocess.Popen(
        [*command, "--licenses", str(s.devices)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env(),
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    paths = HomePaths(outside)
    set_value(paths, "cisco.token_url", f"{url}/oauth2/default/v1/token")
    set_value(paths, "cisco.api_base", f"{url}/services/api/smart-accounts-and-licensing/")
    _emulator.update(proc=proc, url=url, cpu=_cpu_of(proc.pid))


def _stop_emulator() -> None:
    proc = _emulator.pop("proc", None)
    if proc is not None:
        proc.terminate()
        proc.wait()


def _process(s: Setup) -> list[str]:
    return [
        "env", *_CISCO_LOGIN, s.airgap, "--home", str(s.root / "outside"), "--quiet",
        "outside", "process", str(s.bundle), "-o", str(s.root / "resp.airgap"),
        "--concurrency", "32", "--rate", "0",
    ]  # fmt: skip


def _process_after(s: Setup, run: Run) -> float:
    """Airgap's own CPU per vendor call in ms: the client's CPU (from wait4) over the calls the
    emulator counted; the emulator's CPU is its own process's, and is only printed."""
    with urllib.request.urlopen(f"{_emulator['url']}/_emulator/stats") as answer:
        calls: dict[str, int] = json.load(answer)["calls"]
    emulator_cpu = _cpu_of(_emulator["proc"].pid) - _emulator["cpu"]
    _stop_emulator()
    made = sum(calls.values())
    per_call = run.cpu_seconds / made * 1000
    print(
        f"    process: {made:,} vendor calls, client CPU {run.cpu_seconds:.2f} s = "
        f"{per_call:.3f} ms a call; emulator CPU {emulator_cpu:.2f} s",
        flush=True,
    )
    return per_call


READ = "tar -tf + openssl dgst"
EXTRACT = "tar -xf + sha256sum -c"
STAGES: list[Stage] = [
    Stage(
        "pack",
        _pack,
        lambda s: pack_baseline(s.root, s.udi, s.rum, s.openssl),
        "tar -cf + openssl dgst (files)",
        before=_fresh_pack_output,
    ),
    Stage("verify", _verify, _read_baseline, READ, time_target=TIME_RATIO),
    Stage("inspect --json", _inspect_json, _read_baseline, READ, time_target=TIME_RATIO),
    Stage("inspect --html", _inspect_html, _read_baseline, READ),
    Stage(
        "import",
        _import,
        _extract_baseline,
        EXTRACT,
        time_target=TIME_RATIO,
        before=_fresh_import,
        prepare=_prepare_response,
        baseline_before=_empty_extract_folder,
        seconds_per_10k_items=3.0,
        allowed=(0, 4),  # 4: items left pending (the largest size's response, see above)
    ),
    Stage(
        "re-import",
        _import,
        _extract_baseline,
        EXTRACT,
        prepare=_prepare_reimport,
        baseline_before=_empty_extract_folder,
        seconds_per_10k_items=1.0,
        allowed=(0, 4),
    ),
    Stage(
        "outside process",
        _process,
        _read_baseline,
        READ + " (request)",
        before=_process_before,
        after=_process_after,
        figure="ms CPU a vendor call",
        figure_target=CPU_PER_CALL,
    ),
]


@dataclass(frozen=True)
class Result:
    devices: int
    stage: Stage
    ours: Run
    theirs: Run
    bundle_bytes: int
    figure: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours.seconds / self.theirs.seconds


def best(runs: Sequence[Run]) -> Run:
    """The fastest time (least disturbed by the machine) and the highest peak RSS."""
    return Run(
        min(r.seconds for r in runs),
        max(r.max_rss_mib for r in runs),
        min(r.cpu_seconds for r in runs),
    )


def measure_size(
    root: Path,
    devices: int,
    repeats: int,
    airgap: str,
    openssl: str,
    stages: Sequence[Stage] = STAGES,
) -> list[Result]:
    """Generate `devices` devices under `root` and measure `stages` on them."""
    from airgap.home import init_home

    root.mkdir(parents=True)
    started = time.perf_counter()
    udi, rum = make_devices(root, devices)
    print(f"\n{devices:,} devices generated in {time.perf_counter() - started:.1f} s", flush=True)
    home = root / "home"
    init_home(home, role="inside", name="bench", passphrase=None)
    setup = Setup(root, devices, home, udi, rum, root / "req.airgap", airgap, openssl)
    env = child_env()
    results = []
    for stage in stages:
        ours: list[Run] = []
        theirs: list[Run] = []
        if stage.prepare:
            stage.prepare(setup)
        figures: list[float] = []
        baseline = stage.baseline(setup)
        # In turns, so a noisy spell of the machine lands on both sides alike.
        for _ in range(repeats):
            if stage.before:
                stage.before(setup)
            ours.append(run_child(stage.command(setup), env=env, allowed=stage.allowed))
            if stage.after:
                figures.append(stage.after(setup, ours[-1]))
            if stage.baseline_before:
                stage.baseline_before(setup)
            theirs.append(run_child(baseline))
        figure = min(figures) if figures else None
        result = Result(
            devices, stage, best(ours), best(theirs), setup.bundle.stat().st_size, figure
        )
        results.append(result)
        print(
            f"  {stage.name:<16} {result.ours.seconds:7.2f} s  "
            f"CPU {result.ours.cpu_seconds:7.2f} s  "
            f"RSS {result.ours.max_rss_mib:7.1f} MiB   {stage.baseline_name} "
            f"{result.theirs.seconds:6.2f} s   ratio {result.ratio:5.2f}",
            flush=True,
        )
    # The generated files are not needed any more; the next size may be large.
    shutil.rmtree(udi)
    shutil.rmtree(rum)
    (root / "baseline.tar").unlink(missing_ok=True)
    shutil.rmtree(_extract_folder(setup), ignore_errors=True)
    return results


def print_tables(results: list[Result], sizes: list[int], stages: Sequence[Stage] = STAGES) -> None:
    print(
        "\n| devices | bundle | stage | airgap | CPU | peak RSS | baseline | baseline time | "
        "ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        extra = f" ({r.figure:.3f} {r.stage.figure})" if r.figure is not None else ""
        print(
            f"| {r.devices:,} | {r.bundle_bytes / MIB:.0f} MiB | {r.stage.name} | "
            f"{r.ours.seconds:.2f} s | {r.ours.cpu_seconds:.2f} s{extra} | "
            f"{r.ours.max_rss_mib:.0f} MiB | {r.stage.baseline_name} | "
            f"{r.theirs.seconds:.2f} s | {r.ratio:.2f} |"
        )
    by_key = {(r.devices, r.stage.name): r for r in results}
    if len(sizes) > 1:
        print("\nMarginal cost per device (start-up cancels out):\n")
        print("| stage | devices | airgap | baseline | ratio of the differences |")
        print("|---|---|---|---|---|")
        for stage in stages:
            for small, large in itertools.pairwise(sizes):
                a, b = by_key[(small, stage.name)], by_key[(large, stage.name)]
                step = large - small
                ours = (b.ours.seconds - a.ours.seconds) / step * 1e6
                theirs = (b.theirs.seconds - a.theirs.seconds) / step * 1e6
                ratio = f"{ours / theirs:.2f}" if theirs > 0 else "n/a"
                print(
                    f"| {stage.name} | {small:,} → {large:,} | {ours:.1f} µs | "
                    f"{theirs:.1f} µs | {ratio} |"
                )
    smallest, largest = sizes[0], sizes[-1]
    print(f"\nTargets at {largest:,} devices:")
    for stage in stages:
        big = by_key[(largest, stage.name)]
        small = by_key[(smallest, stage.name)]
        growth = big.ours.max_rss_mib / small.ours.max_rss_mib
        rss_ok = big.ours.max_rss_mib <= RSS_CAP and growth <= RSS_GROWTH
        line = (
            f"  {stage.name:<16} peak RSS {big.ours.max_rss_mib:6.1f} MiB (<= {RSS_CAP:.0f}), "
            f"{growth:.2f}x its RSS at {smallest:,} (<= {RSS_GROWTH}): "
            f"{'met' if rss_ok else 'NOT met'}"
        )
        if stage.time_target is not None:
            met = big.ratio <= stage.time_target
            line += (
                f"; time {big.ratio:.2f}x the baseline (<= {stage.time_target}): "
                f"{'met' if met else 'NOT met'}"
            )
        if stage.figure_target is not None and big.figure is not None:
            met = big.figure <= stage.figure_target
            line += (
                f"; {big.figure:.3f} {stage.figure} (<= {stage.figure_target}): "
                f"{'met' if met else 'NOT met'}"
            )
        print(line)
        if stage.seconds_per_10k_items is not None:
            for size in sizes:
                if ITEMS_PER_DEVICE * size < 10_000:
                    continue  # below 10,000 items start-up dominates: the rate would mislead
                r = by_key[(size, stage.name)]
                per_10k = r.ours.seconds / (ITEMS_PER_DEVICE * size) * 10_000
                met = per_10k <= stage.seconds_per_10k_items
                print(
                    f"  {'':<16} at {size:,} devices ({ITEMS_PER_DEVICE * size:,} items): "
                    f"{per_10k:.2f} s per 10,000 items (<= {stage.seconds_per_10k_items:g}): "
                    f"{'met' if met else 'NOT met'}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10000,30000,100000",
        help="comma-separated device counts, smallest first (default 10000,30000,100000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--smoke", action="store_true", help="200 and 600 devices, one repeat")
    parser.add_argument("--keep", type=Path, help="work (and keep the bundles) in this folder")
    parser.add_argument(
        "--stages",
        help="comma-separated stage names to run (default: all; pack always runs, as the "
        f"others read its bundle): {', '.join(s.name for s in STAGES)}",
    )
    args = parser.parse_args()
    stages = STAGES
    if args.stages:
        wanted = {name.strip() for name in args.stages.split(",")} | {"pack"}
        unknown = wanted - {s.name for s in STAGES}
        if unknown:
            parser.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
        stages = [s for s in STAGES if s.name in wanted]
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    if args.smoke:
        sizes, args.repeats = [200, 600], 1
    openssl, airgap = shutil.which("openssl"), airgap_command()
    if not openssl or not airgap or not shutil.which("tar"):
        print("needs tar, openssl and the installed airgap command", file=sys.stderr)
        return 1
    run_child([airgap, "--version"], env=child_env())  # compiles an editable install's bytecode
    with tempfile.TemporaryDirectory(prefix="airgap-bench-scale-") as tmp:
        base = args.keep or Path(tmp)
        results: list[Result] = []
        try:
            for devices in sizes:
                results += measure_size(
                    base / f"n{devices}", devices, args.repeats, airgap, openssl, stages
                )
        finally:
            _stop_emulator()  # a failed run must not leave the emulator behind
        print_tables(results, sizes, stages)
    if args.smoke:
        print("(smoke run: at a few hundred devices the ratios measure start-up, not scale)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
