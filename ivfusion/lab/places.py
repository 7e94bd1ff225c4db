"""Queue places that cannot be hoarded (`QueuePlaces`, installed on Gradio's queue).

A session hash costs nothing to invent, so a limit per session alone is bypassed by
rotating hashes (issue 25: 8 made-up hashes x 2 joins filled a queue of 16 in under a
second). A network address costs more, but a class of 30 behind one school address is 30
honest visitors. So, on top of Gradio's queue size:

* per session: at most `PER_SESSION` requests waiting (not counting the one computing);
* per client address (`guard.client_key`): at most the queue size less a reserve
  (`address_share`), so one address never takes the last places of the queue, while a class
  behind one address still has most of it;
* fair order: a new request is placed by (its session's requests already waiting, its
  address's requests already waiting), so a visitor's first request goes ahead of others'
  second ones, and addresses take turns; a request that has waited `AGE_S` is never
  overtaken (no starvation);
* clients that have gone: a queued request whose session has no open event stream
  (/queue/data, counted by `guard.Streams`) `GONE_AFTER_S` after it joined is dropped.
  Gradio itself drops a session's requests when its stream disconnects; this covers the
  joins that never opened one.

Every refusal is one log line. Uses Gradio's queue internals (gradio 6: `Queue.push`,
`event_queue_per_concurrency_id`, `Event.session_hash/enqueue_time/request`), checked by
tests/test_lab_abuse.py through a real server.
"""
from __future__ import annotations

import asyncio
import logging
import time

from .guard import GuardState, client_key, refuse

log = logging.getLogger("ivfusion.app")

PER_SESSION = 2  # requests one session may have waiting
GONE_AFTER_S = 10.0  # a queued request without an open event stream this long after joining is dropped
AGE_S = 30.0  # a request waiting this long is never overtaken by a fairer newcomer
SWEEP_S = 1.0  # how often queued requests of gone clients are looked for


def address_share(max_size: int) -> int:
    """Places one address may hold: the queue less a reserve of an eighth (at least 4) for
    the other addresses."""
    return max(1, max_size - max(4, max_size // 8))


class QueuePlaces:
    def __init__(self, demo, state: GuardState, per_session: int = PER_SESSION, gone_after_s: float = GONE_AFTER_S,
                 age_s: float = AGE_S):
        self.queue = demo._queue
        self.state, self.per_session, self.gone_after_s, self.age_s = state, per_session, gone_after_s, age_s
        self.share = address_share(self.queue.max_size or 1000)
        self.dropped = 0
        self._sweeper: asyncio.Task | None = None
        self._push = self.queue.push
        self.queue.push = self.push

    def _address(self, event_or_request) -> str:
        request = getattr(event_or_request, "request", event_or_request)
        scope = getattr(request, "scope", None) or {}
        return client_key(scope, self.state.hops)

    def waiting(self) -> list:
        return [ev for q in self.queue.event_queue_per_concurrency_id.values() for ev in q.queue]

    async def push(self, body, request, username):
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        await self.drop_gone()
        session, address = getattr(body, "session_hash", None), self._address(request)
        api = getattr(request, "headers", {}).get("x-gradio-user") == "api"
        waiting = self.waiting()
        mine = sum(ev.session_hash == session for ev in waiting) if session else 0
        if session and mine >= self.per_session:
            text = (f"You already have {mine} requests waiting; wait for them to finish (at most "
                    f"{self.per_session} waiting requests per visitor).")
            refuse(self.state, "queue places (session)", address, text)
            return False, text, "queue_full" if api else "error"
        ours = sum(self._address(ev) == address for ev in waiting)
        if ours >= self.share:
            text = (f"The Lab's queue holds {ours} requests from your network already (at most {self.share} "
                    "of its places); try again in a minute.")
            refuse(self.state, "queue places (address)", address, text)
            return False, text, "queue_full" if api else "error"
        ok, event_id, status = await self._push(body, request, username)
        if ok:
            async with self.queue.delete_lock:
                self._place(event_id, session, address)
        return ok, event_id, status

    def _place(self, event_id: str, session, address: str) -> None:
        """Move the new event from the end of its queue to its fair place."""
        event = self.queue.event_ids_to_events.get(event_id)
        if event is None:
            return
        q = self.queue.event_queue_per_concurrency_id[event.concurrency_id].queue
        if not q or q[-1] is not event:
            return
        q.pop()
        now, per_session, per_address = time.monotonic(), {}, {}
        keys = []
        for ev in q:
            a = self._address(ev)
            keys.append((per_session.get(ev.session_hash, 0), per_address.get(a, 0)))
            per_session[ev.session_hash] = per_session.get(ev.session_hash, 0) + 1
            per_address[a] = per_address.get(a, 0) + 1
        key = (per_session.get(session, 0), per_address.get(address, 0))
        floor = 0  # never ahead of an old request, nor of this session's own earlier ones
        for i, ev in enumerate(q):
            if now - ev.enqueue_time >= self.age_s or ev.session_hash == session:
                floor = i + 1
        at = next((i for i in range(floor, len(q)) if keys[i] > key), len(q))
        q.insert(at, event)

    async def drop_gone(self) -> int:
        """Drop the queued requests of sessions that have no open event stream `gone_after_s`
        after they joined; returns how many sessions were dropped."""
        now, gone = time.monotonic(), set()
        for ev in self.waiting():
            if now - ev.enqueue_time >= self.gone_after_s and not self.state.streams.connected(ev.session_hash):
                gone.add((ev.session_hash, self._address(ev)))
        for session, address in gone:
            refuse(self.state, "gone client", address, f"session {session[:12]} left the queue without listening")
            await self.queue.clean_events(session_hash=session)
        self.dropped += len(gone)
        return len(gone)

    async def _sweep_forever(self) -> None:
        while not self.queue.stopped:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.drop_gone()
            except Exception:  # noqa: BLE001 - the sweep must never stop the queue
                log.exception("queue sweep failed")
