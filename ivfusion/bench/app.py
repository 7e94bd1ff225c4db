"""`ivfusion bench --app`: the Intervention Lab's latency as a user meets it.

The app is started in this process on a free port of 127.0.0.1 and driven through
gradio_client, as the issue judges it: on held-out 640x480 pairs (never the bundled examples),

  new pair  = one /fuse of a pair the server has not seen (upload, clean + intervened pass,
              heat maps, encoding, download of every output) / one forward pass;
  re-fuse   = one /fuse of the same pair with another intervention / one forward pass;

where "one forward pass" is `Fuser().fuse(visible, infrared)` of the default Fuser, timed in
the same process between the requests. Targets: new pair <= 3x, re-fuse <= 2x. The per-step
breakdown comes from the server's own timings of each request.

    python -m ivfusion.bench.app [--pairs 4] [--threads 2] [--weights SPEC]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import sys
import time
from pathlib import Path

TARGETS = {"new pair": 3.0, "re-fuse": 2.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_app_module():
    """The repository's app.py (the Lab's layout), loaded by path."""
    path = Path(__file__).resolve().parents[2] / "app.py"
    if not path.is_file():
        raise FileNotFoundError(f"ivfusion bench --app needs the repository's app.py (not found at {path.name} "
                                "next to the package): run it from a source checkout")
    spec = importlib.util.spec_from_file_location("ivfusion_lab_app", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def held_out_pairs(data: Path, n: int) -> list[tuple[Path, Path]]:
    """Up to n registered 640x480 pairs from `data` (a folder with vi/ and ir/), skipping the
    bundled examples."""
    from ivfusion import io
    from ivfusion.lab.examples import EXAMPLES

    bundled = {k.split("_", 1)[1] for k in EXAMPLES}
    vis, ir = io.list_images(data / "vi"), io.list_images(data / "ir")
    out = []
    for stem in sorted(set(vis) & set(ir)):
        if stem in bundled:
            continue
        if io.read_image(vis[stem]).shape[:2] == (480, 640):
            out.append((vis[stem], ir[stem]))
        if len(out) == n:
            break
    if not out:
        raise FileNotFoundError(f"no 640x480 pairs found in {data} (vi/ and ir/)")
    return out


def _forward_s(fuser, visible, infrared) -> float:
    """Seconds of one forward pass: `fuse` on a Fuser holding no pair (its cache emptied)."""
    fuser.reset()
    t = time.perf_counter()
    fuser.fuse(visible, infrared)
    return time.perf_counter() - t


def run_app_bench(args: argparse.Namespace | None = None) -> dict:
    """Measure and print the two ratios and the per-step breakdown; returns them as a dict.
    args (all optional): pairs, threads, weights, data (see `main`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch
    from gradio_client import Client, handle_file

    from ivfusion import Fuser, io
    from ivfusion.lab.models import ModelBank

    pairs_n = int(getattr(args, "pairs", None) or 4)
    threads = getattr(args, "threads", None)
    weights = getattr(args, "weights", None)
    data = Path(getattr(args, "data", None) or Path(__file__).resolve().parents[3] / "shared" / "data" / "msrs" / "train")
    if threads:
        torch.set_num_threads(int(threads))
    pairs = held_out_pairs(data, pairs_n)
    app = _load_app_module()
    env = dict(os.environ)
    if weights:
        env["IVFUSION_WEIGHTS"] = str(weights)
    bank = ModelBank(env=env, device="cpu")
    demo = app.build_demo(bank)
    lab_app = demo.lab_app
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_KWARGS)
    fuser = Fuser(weights, device="cpu")  # the default Fuser (the bundled weights unless --weights)
    rows = []
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        warm_v, warm_i = lab_app.default_pair  # warm-up: not a held-out pair, not timed
        client.predict(visible=handle_file(warm_v), infrared=handle_file(warm_i), api_name="/fuse")
        fuser.fuse(io.read_image(warm_v), io.read_image(warm_i))
        for vis_path, ir_path in pairs:
            vis, ir = io.read_image(vis_path), io.read_image(ir_path)
            forward = _forward_s(fuser, vis, ir)
            t = time.perf_counter()
            client.predict(visible=handle_file(str(vis_path)), infrared=handle_file(str(ir_path)), api_name="/fuse")
            new = time.perf_counter() - t
            new_steps = dict(lab_app.last_timings)
            t = time.perf_counter()
            client.predict(visible=handle_file(str(vis_path)), infrared=handle_file(str(ir_path)), complementary=False,
                           dropout="drop infrared", api_name="/fuse")
            refuse = time.perf_counter() - t
            re_steps = dict(lab_app.last_timings)
            forward = min(forward, _forward_s(fuser, vis, ir))
            rows.append(dict(pair=Path(vis_path).stem, forward=forward, new=new, refuse=refuse, new_steps=new_steps,
                             re_steps=re_steps))
    finally:
        demo.close()
    med = lambda key: statistics.median(r[key] / r["forward"] for r in rows)  # noqa: E731
    result = {"new pair": med("new"), "re-fuse": med("refuse"), "pairs": [r["pair"] for r in rows],
              "forward_s": statistics.median(r["forward"] for r in rows), "threads": torch.get_num_threads(),
              "rows": rows}
    _print(result)
    return result


def _print(res: dict) -> None:
    print(f"Intervention Lab latency through gradio_client, {len(res['rows'])} held-out 640x480 pairs "
          f"({', '.join(res['pairs'])}), {res['threads']} torch threads")
    print(f"one forward pass of the default Fuser: {res['forward_s']:.3f} s (median)")
    for name in ("new pair", "re-fuse"):
        ok = "within" if res[name] <= TARGETS[name] else "OVER"
        print(f"{name}: {res[name]:.2f}x one forward pass (target <= {TARGETS[name]:g}x: {ok})")
    print("per request (seconds; server steps: pair = decode + clean pass when new, run = intervened pass,"
          " render = heat maps, encode = image files; client = upload, queue, download):")
    print(f"  {'pair':10s} {'request':8s} {'total':>6s} {'ratio':>6s} {'pair':>6s} {'run':>6s} {'render':>6s} "
          f"{'encode':>6s} {'client':>6s}")
    for r in res["rows"]:
        for label, total, st in (("new", r["new"], r["new_steps"]), ("re-fuse", r["refuse"], r["re_steps"])):
            server = st.get("total", 0.0)
            print(f"  {r['pair']:10s} {label:8s} {total:6.3f} {total / r['forward']:6.2f} {st.get('pair', 0):6.3f} "
                  f"{st.get('run', 0):6.3f} {st.get('render', 0):6.3f} {st.get('encode', 0):6.3f} "
                  f"{total - server:6.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ivfusion.bench.app", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=4, help="held-out pairs to time (default 4)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--weights", default=None, help="weights spec of the default model (default: the bundled ones)")
    p.add_argument("--data", default=None, help="folder with vi/ and ir/ holding 640x480 pairs "
                                                "(default ../shared/data/msrs/train)")
    run_app_bench(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
