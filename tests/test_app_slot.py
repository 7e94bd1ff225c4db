"""The Lab's one compute slot (`ivfusion.lab.slot`): heavy forwards of Fuse, compare and
stability never overlap (Gradio runs their concurrency groups at the same time), a Fuse
waits for at most one stability intervention and the page says so, and a stability run stops
at its time budget. Real model and real server on 127.0.0.1, at 128 pixels a side.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

import app  # noqa: E402
from ivfusion import lab, read_image  # noqa: E402
from ivfusion.lab.slot import COMPUTE, ChunkedHold, ComputeSlot  # noqa: E402
from tests.helpers import wait_until  # noqa: E402
from tests.test_app import IR, SIDE, VIS, launch  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.server]  # the whole module is slow: a real server


@pytest.fixture(scope="module")
def bank():
    return lab.ModelBank(env={}, device="cpu", max_side=SIDE)


@pytest.fixture(scope="module")
def lab_app(bank):
    return app.LabApp(bank, precompute=False)


@pytest.fixture(scope="module")
def server(bank):
    demo, url = launch(bank, precompute=False)
    yield url
    demo.close()


def test_the_compute_slot_is_first_come_first_served():
    """A job that releases the slot and queues again between its steps (a stability run) lets
    a request that was already waiting go first: the waiter never waits for the whole job."""
    slot, order = ComputeSlot(), []
    job = ChunkedHold(slot, "stability")
    job.__enter__()
    job.step_done()

    def fuse():
        with slot.hold("fuse"):
            order.append("fuse")

    t = threading.Thread(target=fuse)
    t.start()
    wait_until(lambda: slot.waiting == 1 or not t.is_alive(), "the Fuse to queue for the slot", 30)
    assert slot.waiting == 1, "the Fuse's thread ended without queueing"
    assert job.between() is False  # releases, the queued Fuse runs, then the job has the slot again
    order.append("stability step 2")
    job.release()
    t.join(5)
    assert order == ["fuse", "stability step 2"]
    assert [h[0] for h in slot.history] == ["stability", "fuse", "stability"]
    late = ChunkedHold(slot, "stability", cancel=lambda: False, deadline=time.perf_counter() - 1)
    with late:
        assert late.between() is False  # no step done yet: the budget lets one step run
        late.step_done()
        assert late.between() is True and late.reason == "time budget" and not late.held


def test_stability_stops_at_its_time_budget_and_says_so(bank):
    quick = app.LabApp(bank, precompute=False, stability_budget_s=0.0)  # the budget passes after the first run
    out = quick.stability(str(VIS), str(IR), lab.UNTRAINED_CHOICE, k=16)
    assert "stopped by the time budget after 1 of 16 runs" in out["summary"]
    assert "Cancelled after" not in out["summary"]  # the budget, not a Cancel
    assert read_image(out["instability"]).ndim == 3


class ForwardLog:
    """Records when each forward pass of the network (a Fuser's clean pass, intervention or
    batch) starts and ends, and in which thread, in this process (the server runs here)."""

    def __init__(self, monkeypatch):
        from ivfusion.predictor import Fuser

        self.spans: list[tuple[int, float, float, str]] = []
        lock = threading.Lock()

        def record(name, t0):
            with lock:
                self.spans.append((threading.get_ident(), t0, time.perf_counter(), name))

        for name in ("set_pair", "intervene", "run"):
            real = getattr(Fuser, name)

            def timed(fuser, *a, _real=real, _name=name, **k):
                t0 = time.perf_counter()
                try:
                    return _real(fuser, *a, **k)
                finally:
                    record(_name, t0)

            monkeypatch.setattr(Fuser, name, timed)
        real_batch = Fuser.intervene_batch

        def timed_batch(fuser, *a, **k):  # a generator: each item is one forward
            it = real_batch(fuser, *a, **k)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    record("intervene_batch", t0)
                yield item

        monkeypatch.setattr(Fuser, "intervene_batch", timed_batch)

    def overlaps(self) -> list[tuple]:
        """Pairs of forwards of different threads that ran at the same time."""
        spans = sorted(self.spans, key=lambda s: s[1])
        out = []
        for i, a in enumerate(spans):
            for b in spans[i + 1:]:
                if b[1] >= a[2]:
                    break
                if a[0] != b[0]:
                    out.append((a[3], b[3], round(a[2] - b[1], 4)))
        return out


def test_heavy_forwards_of_fuse_stability_and_compare_never_overlap(server, monkeypatch):
    """Fuse, compare and stability run in different concurrency groups, so Gradio runs them at
    the same time; the compute slot must still let only one forward run at a time, while all
    three finish."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    log = ForwardLog(monkeypatch)
    clients = [Client(server, verbose=False) for _ in range(3)]
    pair = dict(visible=handle_file(str(VIS)), infrared=handle_file(str(IR)))
    calls = [
        lambda: clients[0].predict(**pair, k=6, seed=11, api_name="/stability"),
        lambda: clients[1].predict(**pair, seed=12, api_name="/fuse"),
        lambda: clients[2].predict(**pair, model=lab.DEFAULT_CHOICE, other_model=lab.UNTRAINED_CHOICE, seed=13,
                                   api_name="/compare"),
    ]
    with ThreadPoolExecutor(3) as ex:
        results = [f.result(timeout=300) for f in [ex.submit(c) for c in calls]]
    assert "6 runs" in results[0][-1] and "Intervention:" in results[1][-1] and "the same masks" in results[2][-1]
    threads = {s[0] for s in log.spans}
    assert len(threads) >= 2, "the requests' forwards all ran in one thread: nothing was tested"
    assert not log.overlaps(), f"forwards ran at the same time: {log.overlaps()[:5]}"


def test_a_fuse_that_waits_for_the_compute_slot_says_so(lab_app):
    held, release = threading.Event(), threading.Event()

    def busy():  # another request's computation (a stability step) holds the slot for a while
        with COMPUTE.hold("stability"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=busy)
    t.start()
    held.wait(10)
    said = []
    threading.Timer(1.0, release.set).start()
    # seeds that no earlier request computed: a cached result never enters the slot
    out = lab_app.fuse(str(VIS), str(IR), seed=4243, progress=lambda *a, **k: said.append(k.get("desc")))
    t.join()
    assert said == ["Waiting for a stability analysis step to finish computing\u2026"]
    assert "Waited " in out["notices"] and "for another request's computation" in out["notices"]
    quiet = lab_app.fuse(str(VIS), str(IR), seed=4244, progress=lambda *a, **k: said.append(k.get("desc")))
    assert len(said) == 1 and "Waited" not in quiet["notices"]  # a free slot: no word about waiting


def _queue(slot, name, order, weight=None, owner=None):
    """Start a thread that holds `slot` once, recording its name in `order`."""
    def run():
        with slot.hold(name, weight, owner):
            order.append(name)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_the_slot_serves_the_computation_most_requests_wait_for_first():
    """Among waiting requests, the one whose result more visitors wait for goes first; equal
    weights keep their order of arrival."""
    slot, order, waiters = ComputeSlot(age_s=1e9), [], {"shared": 1}
    slot.acquire("test")
    threads = []
    for name, weight in (("own seed 1", None), ("own seed 2", None), ("shared", lambda: waiters["shared"])):
        threads.append(_queue(slot, name, order, weight))
        wait_until(lambda n=len(threads): slot.waiting == n, f"{name} to queue", 30)
    waiters["shared"] = 5  # four more visitors ask for the same result while it waits
    slot.release()
    for t in threads:
        t.join(10)
    assert order == ["shared", "own seed 1", "own seed 2"]


def test_a_lone_request_is_not_overtaken_forever():
    """Waiting counts: a request that has waited `age_s` per extra waiter goes before a newer
    popular one, so a stream of shared results cannot starve a visitor's own seed."""
    slot, order = ComputeSlot(age_s=0.2), []
    slot.acquire("test")
    lone = _queue(slot, "own seed", order)
    wait_until(lambda: slot.waiting == 1, "the lone request to queue", 30)
    time.sleep(0.7)  # 3.5 ages: worth more than a new computation two visitors wait for
    popular = _queue(slot, "shared by two", order, lambda: 2)
    wait_until(lambda: slot.waiting == 2, "the shared one to queue", 30)
    slot.release()
    lone.join(10)
    popular.join(10)
    assert order == ["own seed", "shared by two"]


def test_requests_for_a_result_being_computed_wait_for_it_instead_of_computing_it_again(lab_app, monkeypatch):
    """Five visitors press Fuse with the same pair and settings while the slot is busy: one
    forward pass runs, and all five get its result, which then counts as cached."""
    forwards = []
    real = lab.runs.run_session_pair

    def counted(*a, **kw):
        forwards.append(threading.get_ident())
        return real(*a, **kw)

    lab.cache.RESULTS.clear()
    outs, states, errors = [], [{} for _ in range(5)], []

    def visitor(state):
        try:
            outs.append(lab_app.fuse(str(VIS), str(IR), lab.UNTRAINED_CHOICE, seed=77, state=state))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    monkeypatch.setattr(lab.runs, "run_session_pair", counted)  # counts the real passes
    with COMPUTE.hold("test"):  # another request's computation holds the slot meanwhile
        threads = [threading.Thread(target=visitor, args=(st,)) for st in states]
        for t in threads:
            t.start()
        wait_until(lambda: COMPUTE.waiting == 1 and len(lab.cache.FLIGHTS) == 1, "one computation to queue", 60)
        time.sleep(0.5)  # the four others have joined it, not the slot
        assert COMPUTE.waiting == 1
    for t in threads:
        t.join(120)
    assert not errors and len(outs) == 5
    assert len(forwards) == 1
    assert sum(st["timings"]["cached"] == 0 for st in states) == 1
    assert len({id(st["run"]) for st in states}) == 1
    assert len(lab.cache.FLIGHTS) == 0


def test_one_client_with_many_requests_delays_another_by_at_most_one_hold():
    """Fair between clients first: a client with five requests waiting (rotated session hashes,
    many handlers) lets another client's request go after one of its own, not after all five;
    a client that arrives later starts level, not ahead of the one already served."""
    slot, order = ComputeSlot(age_s=1e9), []
    slot.acquire("test", owner="someone else")
    threads = []
    for k in range(5):
        threads.append(_queue(slot, f"flood {k}", order, owner="10.0.0.66"))
        wait_until(lambda n=len(threads): slot.waiting == n, "the flood to queue", 30)
    threads.append(_queue(slot, "visitor", order, owner="10.0.0.7"))
    wait_until(lambda: slot.waiting == 6, "the visitor to queue", 30)
    slot.release()
    for t in threads:
        t.join(10)
    assert order == ["flood 0", "visitor", "flood 1", "flood 2", "flood 3", "flood 4"]

