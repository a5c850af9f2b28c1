"""Start-up cost of the ``payhub`` command, each figure measured in fresh processes (wall time):

- ``payhub --help``: median of ``runs`` runs (the first one, which warms the file cache, discarded);
- ``payhub run --once`` on an empty backlog: the quickstart's settings (examples/quickstart.toml: file source,
  three programs, the bank, gift-card and credit-note rails of plugins/) on a migrated SQLite database, nothing to do;
  median of ``runs`` runs, the first discarded;
- restart after SIGKILL to the first rail call: ``payhub run`` (the daemon) works a backlog whose rail (a FakeRail of
  ``payhub.testing`` in a plugin distribution written here) records the time of each call and sends slowly; the
  daemon is killed with SIGKILL while a send is in flight, started again, and timed from just before the exec of the
  restart to its first rail call (a lookup of the payout left ``sending``, or a send); p90 over ``restarts``.

Bytecode is cached as in an installed payhub (in a directory of the run, PYTHONPYCACHEPREFIX, written by the first,
discarded run). Each figure's note gives the spread, the median CPU time (user + system, steadier than wall time on
a loaded machine) and the load average.

    python -m bench.startup [--runs 8] [--restarts 11] [--json]
    python -m bench.startup --imports 25   # where run --once's import time goes, by package (no figures)

``--imports N`` runs ``payhub run --once`` on the quickstart site under ``python -X importtime`` ``runs`` times and
prints the N packages (payhub's by module) with the largest median self import time: the import-time floor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.figures import CompareOptions, Figure, render_table

ROOT = Path(__file__).resolve().parents[1]
PAYHUB = str(Path(sys.executable).with_name("payhub"))
HELP_TARGET = 0.25
ONCE_TARGET = 0.4
RESTART_TARGET = 1.0
PROBE_MODULE = "payhub_startup_probe"
PROBE_ENTRY_POINT = "startup_probe"
SEND_SECONDS = 0.3  # each send of the probe rail takes this long: the kill lands while one is in flight

PROBE_SOURCE = f'''\
"""A FakeRail that appends "<pid> <time.time()> <call>" to $BENCH_STARTUP_PROBE on each call, and sends slowly."""

import os
import time

from payhub.testing import FakeRail


def _mark(call):
    with open(os.environ["BENCH_STARTUP_PROBE"], "a", encoding="utf-8") as fh:
        fh.write(f"{{os.getpid()}} {{time.time()!r}} {{call}}\\n")


class ProbeRail(FakeRail):
    def send(self, instructions):
        _mark("send")
        time.sleep({SEND_SECONDS})
        return super().send(instructions)

    def lookup(self, keys):
        _mark("lookup")
        return super().lookup(keys)
'''


_BASE_ENV: dict[str, str] = {}  # set by compare(): where the measured processes keep their bytecode


def _env(extra: dict[str, str] | None = None, site: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHUB_")}
    env.update(_BASE_ENV)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _payhub(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> tuple[float, float]:
    """Run ``payhub args`` to completion; its wall time and CPU time (user + system) in seconds."""
    cpu = _cpu()
    start = time.perf_counter()
    done = subprocess.run([PAYHUB, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if check and done.returncode != 0:
        raise RuntimeError(f"payhub {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, _cpu() - cpu


def _timed(name: str, target: float, runs: int, args: Sequence[str], what: str = "") -> Figure:
    """Median wall time of ``runs`` runs of ``payhub args`` (the first discarded) as a figure."""
    measured = [_payhub(args) for _ in range(runs)][1:]
    walls = [wall for wall, _ in measured]
    cpus = [cpu for _, cpu in measured]
    return Figure(name, statistics.median(walls), "s", target, "lower",
                  f"{what}median of {len(walls)} (min {min(walls):.3f}, max {max(walls):.3f}; CPU median "
                  f"{statistics.median(cpus):.3f}); {_load()}")


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ----------------------------------------------------------------------------------------------------- help


def measure_help(runs: int) -> Figure:
    return _timed("startup: payhub --help", HELP_TARGET, runs, ["--help"])


# ------------------------------------------------------------------------------------------------- run --once


def quickstart_site(workdir: Path) -> Path:
    """The quickstart's settings with an empty deals file and its payees, migrated; the settings file's path."""
    example = ROOT / "examples"
    shutil.copy(example / "quickstart.toml", workdir / "quickstart.toml")
    qs = workdir / "quickstart"
    (qs / "bank-outbox").mkdir(parents=True)
    (qs / "credit-notes").mkdir()
    shutil.copy(example / "quickstart" / "payees.csv", qs / "payees.csv")
    header = (example / "quickstart" / "deals.csv").read_text(encoding="utf-8").splitlines()[0]
    (qs / "deals.csv").write_text(header + "\n", encoding="utf-8")
    config = workdir / "quickstart.toml"
    _payhub(["-c", str(config), "db", "upgrade"])
    _payhub(["-c", str(config), "run", "--once"])  # syncs the payees: later runs have nothing to do
    return config


def measure_once(workdir: Path, runs: int) -> Figure:
    config = quickstart_site(workdir)
    return _timed("startup: payhub run --once (empty backlog)", ONCE_TARGET, runs,
                  ["-c", str(config), "run", "--once", "--no-progress"], "quickstart settings, SQLite; ")


# ------------------------------------------------------------------------------------------ restart after kill


def probe_site(workdir: Path, payees: int = 200, events: int = 2_000) -> tuple[Path, Path]:
    """A backlog of ``events`` deals for ``payees`` payees (one payout each, one per send) paid through the probe
    rail, a plugin distribution exposing it, and a migrated database; (settings file, site directory)."""
    site = workdir / "site"
    dist = site / "payhub_startup_probe-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: payhub-startup-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[payhub.rails]\n{PROBE_ENTRY_POINT} = {PROBE_MODULE}:ProbeRail\n")
    (site / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE, encoding="utf-8")
    rng = random.Random(7)
    with (workdir / "payees.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,name,country,currency,email,account\n")
        for k in range(payees):
            fh.write(f"P{k:05d},Partner {k},US,USD,p{k}@example.com,ACCT{k:08d}\n")
    with (workdir / "deals.csv").open("w", encoding="utf-8") as fh:
        fh.write("id,type,occurred_at,payee_id,partner_id,amount,currency\n")
        for i in range(events):
            k = i % payees
            fh.write(f"OPP{i:07d},deal_won,2026-01-01T00:00:00Z,P{k:05d},PT{k:05d},"
                     f"{rng.randrange(1_000, 100_000)}.00,USD\n")
    config = workdir / "payhub.toml"
    config.write_text(f"""\
[database]
url = "sqlite:///payhub.db"

[log]
level = "WARNING"

[payees]
file = "payees.csv"

[sources.deals]
plugin = "file"
path = "deals.csv"
settle_seconds = 0

[programs.spiff]
calculator = "percentage"
percent = "2.5"

[rails.probe]
plugin = "{PROBE_ENTRY_POINT}"
max_batch = 1

[routing]
default_rail = "probe"
""", encoding="utf-8")
    _payhub(["-c", str(config), "db", "upgrade"], env=_env(site=site))
    return config, site


def _first_call(probe: Path, proc: subprocess.Popen[bytes], deadline: float) -> float | None:
    """The time of ``proc``'s first rail call, waiting for it until ``deadline`` (monotonic) or its exit."""
    pid = proc.pid
    while time.monotonic() < deadline and proc.poll() is None:
        if probe.exists():
            for line in probe.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == str(pid):
                    return float(parts[1])
        time.sleep(0.005)
    return None


def measure_restart(workdir: Path, restarts: int) -> Figure:
    config, site = probe_site(workdir)
    probe = workdir / "calls.log"
    env = _env({"BENCH_STARTUP_PROBE": str(probe)}, site=site)
    args = [PAYHUB, "-c", str(config), "run", "--no-progress"]
    rng = random.Random(11)
    latencies: list[float] = []
    for attempt in range(restarts + 1):  # the first start works the backlog up to its sends: not a restart
        started = time.time()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = _first_call(probe, proc, time.monotonic() + 120)
        if first is None:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"no rail call (within 120 s) (exit {proc.returncode}): {err.decode()[-2000:]}")
        if attempt:
            latencies.append(first - started)
        time.sleep(rng.uniform(0.02, SEND_SECONDS * 0.8))  # inside the first call (lookup or send) or the send after
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    latencies.sort()
    p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies) + 0.5) - 1)]
    return Figure("startup: restart after SIGKILL to first rail call (p90)", p90, "s", RESTART_TARGET, "lower",
                  f"{len(latencies)} restarts of `payhub run`, median {statistics.median(latencies):.3f}, "
                  f"max {latencies[-1]:.3f}; {_load()}")


# ------------------------------------------------------------------------------------------------------ imports


def import_times(stderr: str) -> dict[str, float]:
    """Self import time (ms) by package, from ``python -X importtime``'s report on ``stderr``: a third-party package
    whole (``sqlalchemy``), payhub and its plugins by module (``payhub.settings``)."""
    found: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, _total, name = line.split(":", 1)[1].split("|")
        name = name.strip()
        key = name if name.split(".")[0].startswith("payhub") else name.split(".")[0]
        found[key] = found.get(key, 0.0) + int(own) / 1000
    return found


def measure_imports(workdir: Path, runs: int, top: int) -> str:
    """The ``top`` packages with the largest median self import time in ``runs`` runs of ``run --once`` (quickstart
    settings, nothing to do), as a table; and the median total."""
    config = quickstart_site(workdir)
    code = "import sys; from payhub.cli import main; sys.exit(main())"
    args = [sys.executable, "-X", "importtime", "-c", code, "-c", str(config), "run", "--once", "--no-progress"]
    samples: list[dict[str, float]] = []
    for _ in range(runs + 1):  # the first writes the bytecode: discarded
        done = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"run --once exited {done.returncode}: {done.stderr[-2000:]}")
        samples.append(import_times(done.stderr))
    samples = samples[1:]
    names = {name for sample in samples for name in sample}
    median = {name: statistics.median(sample.get(name, 0.0) for sample in samples) for name in names}
    total = statistics.median(sum(sample.values()) for sample in samples)
    lines = [f"run --once import time (self, median of {runs}, ms): total {total:.0f}; {_load()}"]
    for name, ms in sorted(median.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{ms:8.1f}  {100 * ms / total:5.1f} %  {name}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- compare


def compare(opts: CompareOptions) -> list[Figure]:
    """The three start-up figures (``opts.extra``: ``startup_runs``, default 8; ``startup_restarts``, default 11)."""
    runs = int(opts.extra.get("startup_runs", 8))
    restarts = int(opts.extra.get("startup_restarts", 11))
    base = Path(tempfile.mkdtemp(prefix="payhub-startup-", dir=opts.workdir))
    # Bytecode is cached, as in an installed payhub (pip compiles it), here outside the source tree; the first run
    # of each command (discarded) writes it.
    _BASE_ENV.update(PYTHONPYCACHEPREFIX=str(base / "pycache"), PYTHONDONTWRITEBYTECODE="")
    try:
        (base / "once").mkdir()
        (base / "restart").mkdir()
        return [measure_help(runs), measure_once(base / "once", runs), measure_restart(base / "restart", restarts)]
    finally:
        _BASE_ENV.clear()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs of each command (the first is discarded)")
    parser.add_argument("--restarts", type=int, default=11, help="restarts after SIGKILL")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--imports", type=int, default=0, metavar="N",
                        help="print the N packages taking most of run --once's import time instead of the figures")
    args = parser.parse_args(argv)
    if args.imports:
        base = Path(tempfile.mkdtemp(prefix="payhub-imports-", dir=args.workdir))
        _BASE_ENV.update(PYTHONPYCACHEPREFIX=str(base / "pycache"), PYTHONDONTWRITEBYTECODE="")
        try:
            (base / "once").mkdir()
            print(measure_imports(base / "once", args.runs, args.imports))
        finally:
            _BASE_ENV.clear()
            shutil.rmtree(base, ignore_errors=True)
        return
    figures = compare(CompareOptions(workdir=args.workdir,
                                     extra={"startup_runs": args.runs, "startup_restarts": args.restarts}))
    if args.json:
        print(json.dumps([fig.as_dict() for fig in figures], indent=2))
    else:
        print(render_table(figures))


if __name__ == "__main__":
    main()
