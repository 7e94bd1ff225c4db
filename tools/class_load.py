"""A class of students on the Lab, through gradio_client: refusals and how long each click waits.

Each student joins at a random moment within --join-s seconds (a client of their own: their
own session), then follows a 4-click lesson on one pair, reading 2-6 s between clicks:

  1. complementary masking, seed 0
  2. random masking, seed 0
  3. complementary masking, their own seed (1, 2, ... by student)
  4. drop infrared

A click's wait is the time from the call to its result (upload, queue, computation,
download). The script prints every error and the waits' median, 90th percentile and maximum,
overall and per click. It starts the Lab itself on a free loopback port (python app.py), or
drives one already running at --url, which must be a loopback address: it never loads a
machine it does not own. Bounded: at most 60 students.

    python tools/class_load.py                       # 30 students, the bundled night pair
    python tools/class_load.py --pair VIS.png IR.png --students 30 --url http://127.0.0.1:7860/
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAX_STUDENTS = 60
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
LESSON = (  # (what the teacher says, the /fuse settings; "own" = the student's own seed)
    ("complementary masking, seed 0", dict(complementary=True, random_masking=False, dropout="none", seed=0)),
    ("random masking, seed 0", dict(complementary=False, random_masking=True, dropout="none", seed=0)),
    ("complementary masking, own seed", dict(complementary=True, random_masking=False, dropout="none", seed="own")),
    ("drop infrared", dict(complementary=False, random_masking=False, dropout="drop infrared", seed=0)),
)


def _pctl(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between order statistics."""
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100.0
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _start_server(env_extra: dict[str, str]) -> tuple[subprocess.Popen, str]:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), **env_extra}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"class_load: the app exited with code {proc.returncode} during start-up")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                _wait_idle(proc.pid, deadline)  # the Lab precomputes the examples after it answers
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    proc.terminate()
    raise SystemExit("class_load: the app did not start within 600 s")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_idle(pid: int, deadline: float, quiet_s: float = 3.0) -> None:
    """Until the server has used under 15% of a core for quiet_s seconds (a teacher opens the
    Space before the class comes in; an idle Lab's periodic sweeps use about 5%), or the deadline."""
    last, since = _cpu_s(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_s(pid)
        if now - last > 0.15 * 0.5:
            since = time.monotonic()
        last = now
        if time.monotonic() - since >= quiet_s:
            return


def student(k: int, url: str, pair: tuple[str, str], start: float, join_at: float, reading: list[float],
            records: list, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file

    time.sleep(max(0.0, start + join_at - time.perf_counter()))
    try:
        client = Client(url, verbose=False)
    except Exception as e:  # noqa: BLE001 - reported as the student's error
        with lock:
            records.append(dict(student=k, click=0, wait=None, error=f"join: {type(e).__name__}: {e}"))
        return
    for c, (_, settings) in enumerate(LESSON, start=1):
        kw = dict(settings)
        if kw["seed"] == "own":
            kw["seed"] = k + 1
        t = time.perf_counter()
        error = None
        try:
            client.predict(visible=handle_file(pair[0]), infrared=handle_file(pair[1]), api_name="/fuse", **kw)
        except Exception as e:  # noqa: BLE001 - a refusal or a failure: counted and printed
            error = f"{type(e).__name__}: {e}"
        wait = time.perf_counter() - t
        with lock:
            records.append(dict(student=k, click=c, wait=None if error else wait, error=error,
                                at=t - start))
        if c < len(LESSON):
            time.sleep(reading[c - 1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/class_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30, help=f"students (1 to {MAX_STUDENTS}, default 30)")
    p.add_argument("--join-s", type=float, default=10.0, help="students join within this many seconds (default 10)")
    p.add_argument("--read-s", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"),
                   help="reading time between clicks, uniform (default 2 6)")
    p.add_argument("--pair", nargs=2, metavar=("VISIBLE", "INFRARED"),
                   help="the lesson's pair (default: the bundled night pair msrs_00037N)")
    p.add_argument("--url", help="a Lab already running on a loopback address (default: start one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the joins and reading times (default 0)")
    p.add_argument("--timeline", action="store_true", help="also print every click: when it was made and its wait")
    args = p.parse_args(argv)
    if not 1 <= args.students <= MAX_STUDENTS:
        p.error(f"--students must be from 1 to {MAX_STUDENTS}, got {args.students}")
    if args.join_s < 0 or not 0 <= args.read_s[0] <= args.read_s[1] <= 120:
        p.error("--join-s must be >= 0 and --read-s MIN MAX within 0 to 120 s, MIN <= MAX")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        p.error(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}), got {args.url!r}")
    if args.pair:
        pair = tuple(str(Path(x).resolve()) for x in args.pair)
        for x in pair:
            if not Path(x).is_file():
                p.error(f"no such file: {x}")
    else:
        from ivfusion.hub import EXAMPLES_DIR

        pair = (str(EXAMPLES_DIR / "vi" / "msrs_00037N.png"), str(EXAMPLES_DIR / "ir" / "msrs_00037N.png"))

    rng = random.Random(args.seed)
    joins = sorted(rng.uniform(0, args.join_s) for _ in range(args.students))
    readings = [[rng.uniform(*args.read_s) for _ in range(len(LESSON) - 1)] for _ in range(args.students)]
    proc = None
    url = args.url
    if not url:
        t = time.perf_counter()
        proc, url = _start_server({})
        print(f"started the Lab at {url} in {time.perf_counter() - t:.0f} s")
    records: list[dict] = []
    lock = threading.Lock()
    cpu0 = _cpu_s(proc.pid) if proc is not None else None
    own0 = sum(os.times()[:2])
    try:
        start = time.perf_counter() + 1.0
        threads = [threading.Thread(target=student, args=(k, url, pair, start, joins[k], readings[k], records, lock),
                                    daemon=True) for k in range(args.students)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        span = time.perf_counter() - start
        cpu = _cpu_s(proc.pid) - cpu0 if proc is not None else None
        own = sum(os.times()[:2]) - own0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    errors = [r for r in records if r["error"]]
    waits = [r["wait"] for r in records if r["wait"] is not None]
    print(f"{args.students} students joined within {args.join_s:g} s, {len(LESSON)} clicks each on "
          f"{Path(pair[0]).name}, reading {args.read_s[0]:g}-{args.read_s[1]:g} s between clicks; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; the class took {span:.0f} s")
    if cpu is not None:  # little moved by other programs on the machine, unlike the waits
        print(f"the Lab's process used {cpu:.1f} CPU seconds during the class ({cpu / len(records):.2f} s a click), "
              f"{cpu / span / (os.cpu_count() or 1):.0%} of the machine's {os.cpu_count()} CPUs over its {span:.0f} s")
    # the students' clients share this process and the machine's cores with the Lab
    print(f"the students' clients (this process) used {own:.1f} CPU seconds ({own / span:.0%} of one CPU)")
    print(f"errors: {len(errors)} of {args.students * len(LESSON)} clicks")
    for r in errors[:20]:
        print(f"  student {r['student']}, click {r['click']}: {r['error'][:200]}")
    print(f"wait, all clicks: median {statistics.median(waits):.2f} s, 90th percentile {_pctl(waits, 90):.2f} s, "
          f"max {max(waits):.2f} s (n={len(waits)})" if waits else "no click was answered")
    for c, (what, _) in enumerate(LESSON, start=1):
        w = [r["wait"] for r in records if r["click"] == c and r["wait"] is not None]
        if w:
            print(f"  click {c} ({what}): median {statistics.median(w):.2f} s, 90th percentile {_pctl(w, 90):.2f} s, "
                  f"max {max(w):.2f} s (n={len(w)})")
    if args.timeline:
        for r in sorted(records, key=lambda r: r.get("at", 0)):
            wait = f"{r['wait']:6.2f} s" if r["wait"] is not None else "error"
            print(f"  t={r.get('at', 0):6.2f} s student {r['student']:2d} click {r['click']}: {wait}")
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
