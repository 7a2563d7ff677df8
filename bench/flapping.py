"""Flapping benchmark: a sawtooth and a bursty task trace through Sextant's policy (the real
`app.scaling.policy.decide`), an HPA-default simulation and a KEDA-chart-default one, same run.

Each trace is a list of tasks (arrival, duration) around a *level* of concurrent tasks that
shifts every 20 minutes (the "true level shifts": the rise from nothing, each change of level,
and the fall to nothing after the last one, which the simulation runs for 15 minutes); on top of
the level the load oscillates (a sawtooth: the level's tasks arrive in a batch every 60 s and
last 40 s) or bursts (a steady stream at the level, plus a burst of twice the level's 30-second
tasks at random minutes).

One discrete-event simulation, one second per step, serves every autoscaler: FIFO queue, a
worker takes `tasks_per_worker` tasks at once and only `startup` seconds after it was asked for;
a worker that leaves takes no new task and goes when its running tasks are done (warm shutdown,
the same for every model, so only the decisions differ). The autoscalers see queued + running:

  Sextant   every 10 s, through Prometheus (queued and running of up to one 15 s scrape ago,
            and that sample's age), default policy: ceil(load / tasks_per_worker) in [1, 10],
            +10 workers per decision at most (`--up-limit`), a load rising over the last two
            samples counted one start-up (30 s) plus one sample interval ahead, within 120 s of
            a scale-up a further one, and at any time one only that projection asks for, only
            when the next sample wants it too or the queue alone exceeds the workers' slots
            (the start-up guard), down only to the highest
            recommendation of the last 300 s (`--down-window`, the policy's
            `scale_down_window_seconds`), in one step and never into a rising load, with flap
            damping (near flaps included) growing that window up to 1200 s
            (`--down-window-max`, `scale_down_window_max_seconds`; 0 turns it off);
            fail-static never fires here (no gaps).
  HPA       defaults (kubernetes pkg/apis/autoscaling/v2/defaults.go, peers.md A3): 15 s sync,
            tolerance 0.1 on current/target, scale-up max(100 %, 4 pods) per 15 s, scale-down
            300 s stabilization then 100 % per 15 s; AverageValue target = tasks_per_worker; the
            metric through Prometheus (same 15 s scrape lag), bounds [1, 10].
  KEDA      the official chart's defaults (peers.md A2, airflow.md 3.8): the postgresql
            trigger `ceil(count(queued|running) / concurrency)` read from the database (no lag),
            target 1, minReplicaCount 0, maxReplicaCount 10, pollingInterval 5 s for 0 <-> 1
            (cooldownPeriod 30 s to go to 0), the HPA above for 1 <-> N (`advanced: {}`).

Printed per trace, seed and model: replica changes per true level shift (target for Sextant
<= 1.5), the p95 time a task waited for a slot (target: Sextant no worse than either peer) and
worker-minutes; with one seed, also each model's replica changes and longest wait. A seed draws
the levels, the arrivals and the bursts; the targets are met only if met on every seed.

Run: `uv run python -m bench.flapping [--minutes 120] [--seed 1 2 ...] [--down-window 300]
[--down-window-max 1200] [--up-limit 10]`
(about 1 s per seed, no servers; seeds 1 to 10 by default).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from app.scaling.policy import Damping, LoadSample, Observation, Policy, Recommendation, decide
from bench._alerting_common import p95, table, verdict

PER_WORKER = 8
MIN_WORKERS, MAX_WORKERS = 1, 10
STARTUP = 30  # seconds from "scale up" to a worker taking tasks (same for every model)
SCRAPE = 15  # Prometheus scrape interval: Sextant and the HPA see values up to this old
LEVEL_SECONDS = 20 * 60
TAIL = 900  # seconds simulated after the trace, without new tasks
TARGET_CHANGES_PER_SHIFT = 1.5


@dataclass(frozen=True, slots=True)
class Task:
    arrival: int
    duration: int


@dataclass
class Trace:
    name: str
    tasks: list[Task]
    levels: list[int]  # one per LEVEL_SECONDS segment
    seconds: int

    @property
    def shifts(self) -> int:
        """How often the true level changes: the first rise from nothing and the fall to nothing
        after the last level included (the simulation runs `TAIL` seconds without tasks after
        the trace and counts the changes the models make then)."""
        levels = [0, *self.levels, 0]
        return sum(1 for a, b in itertools.pairwise(levels) if a != b)


def levels(minutes: int, rng: random.Random) -> list[int]:
    segments = max(1, minutes * 60 // LEVEL_SECONDS)
    out: list[int] = []
    for _ in range(segments):
        choices = [v for v in (8, 24, 40, 64) if not out or v != out[-1]]
        out.append(rng.choice(choices))
    return out


def sawtooth(minutes: int, rng: random.Random) -> Trace:
    """Every 60 s the level's tasks arrive at once and run 40 s: load L, 0, L, 0..."""
    plan = levels(minutes, rng)
    tasks = []
    for index, level in enumerate(plan):
        for start in range(index * LEVEL_SECONDS, (index + 1) * LEVEL_SECONDS, 60):
            tasks += [Task(start, 40) for _ in range(level)]
    return Trace("sawtooth", tasks, plan, len(plan) * LEVEL_SECONDS)


def bursty(minutes: int, rng: random.Random) -> Trace:
    """A steady stream holding the level (60 s tasks), and bursts of 2x the level (30 s)."""
    plan = levels(minutes, rng)
    tasks = []
    for index, level in enumerate(plan):
        begin = index * LEVEL_SECONDS
        for second in range(begin, begin + LEVEL_SECONDS):
            # Poisson arrivals at level/60 per second keep ~level tasks running.
            tasks += [Task(second, 60) for _ in range(_poisson(rng, level / 60))]
        for minute in range(LEVEL_SECONDS // 60):
            if rng.random() < 0.2:
                tasks += [Task(begin + minute * 60 + rng.randrange(60), 30)] * (2 * level)
    return Trace("bursty", tasks, plan, len(plan) * LEVEL_SECONDS)


def _poisson(rng: random.Random, mean: float) -> int:
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


# --- autoscalers: called every second with (now, observed load, current replicas) -------------


class Load(NamedTuple):
    """Queued and running tasks at one second."""

    queued: int
    running: int

    @property
    def total(self) -> int:
        return self.queued + self.running


Scaler = Callable[[int, Callable[[int], Load], int], int]


def sextant(
    down_window: int = 300, down_window_max: int = 1200, up_limit: int | None = None
) -> Scaler:
    policy = Policy(
        MIN_WORKERS, MAX_WORKERS, PER_WORKER, down_window=timedelta(seconds=down_window),
        down_window_max=timedelta(seconds=down_window_max),
    )  # fmt: skip
    if up_limit is not None:
        policy = replace(policy, up_limit=up_limit)
    history: tuple[Recommendation, ...] = ()
    damping = Damping()
    samples: tuple[LoadSample, ...] = ()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def step(now: int, load_at: Callable[[int], Load], current: int) -> int:
        nonlocal history, damping, samples
        if now % 10:
            return current
        scraped = now - now % SCRAPE
        seen = load_at(scraped)  # the last scrape's values, and how old they are
        observation = Observation(seen.queued, seen.running, age=now - scraped)
        at = t0 + timedelta(seconds=now)
        decision = decide(policy, current, observation, history, at, 90, damping, samples)
        history, damping, samples = decision.history, decision.damping, decision.samples
        return decision.desired

    return step


@dataclass
class Hpa:
    """The HPA's default behaviour for an AverageValue metric of target `PER_WORKER` tasks."""

    lag: int = SCRAPE
    minimum: int = MIN_WORKERS
    recommendations: deque[tuple[int, int]] = field(default_factory=deque)
    events: deque[tuple[int, int]] = field(default_factory=deque)  # (time, replicas after)

    def step(self, now: int, load_at: Callable[[int], Load], current: int) -> int:
        if now % 15:
            return current
        seen = (load_at(now - now % self.lag) if self.lag else load_at(now)).total
        if current == 0:
            return current  # 0 -> 1 is KEDA's job; a bare HPA never sits at 0 here
        ratio = (seen / current) / PER_WORKER
        wanted = current if abs(ratio - 1) <= 0.1 else math.ceil(seen / PER_WORKER)
        wanted = max(self.minimum, min(MAX_WORKERS, wanted))
        self.recommendations.append((now, wanted))
        while self.recommendations and now - self.recommendations[0][0] >= 300:
            self.recommendations.popleft()
        if wanted < current:
            wanted = min(current, max(r for _, r in self.recommendations))
        if wanted > current:
            # max(100 %, 4 pods) per 15 s period, counted from the replicas 15 s ago.
            base = self._replicas_at(now - 15, current)
            wanted = min(wanted, max(base * 2, base + 4))
        if wanted != current:
            self.events.append((now, wanted))
        return max(1 if current else 0, wanted)

    def _replicas_at(self, when: int, current: int) -> int:
        before = [r for t, r in self.events if t <= when]
        return before[-1] if before else current


def hpa() -> Scaler:
    return Hpa().step


def keda() -> Scaler:
    inner = Hpa(lag=0, minimum=1)
    zero_since: int | None = None

    def step(now: int, load_at: Callable[[int], Load], current: int) -> int:
        nonlocal zero_since
        load = load_at(now).total
        if now % 5 == 0:
            if load > 0:
                zero_since = None
                if current == 0:
                    return 1  # activation
            else:
                zero_since = now if zero_since is None else zero_since
                if current > 0 and now - zero_since >= 30:
                    return 0  # cooldownPeriod to zero
        return inner.step(now, load_at, current) if current > 0 else current

    return step


# --- the simulation -----------------------------------------------------------------------------


@dataclass
class Worker:
    ready_at: int
    running: list[int] = field(default_factory=list)  # end times
    leaving: bool = False


@dataclass
class Outcome:
    changes: int
    waits: list[float]
    worker_minutes: float


def simulate(trace: Trace, scaler: Scaler, start: int) -> Outcome:
    arrivals = sorted(trace.tasks, key=lambda t: t.arrival)
    queue: deque[tuple[Task, int]] = deque()
    workers = [Worker(ready_at=0) for _ in range(start)]
    load_history: list[Load] = []
    waits: list[float] = []
    replicas, changes, worker_seconds = start, 0, 0.0
    index = 0
    for now in range(trace.seconds + TAIL):
        while index < len(arrivals) and arrivals[index].arrival <= now:
            queue.append((arrivals[index], now))
            index += 1
        for worker in workers:
            worker.running = [end for end in worker.running if end > now]
        workers = [w for w in workers if not (w.leaving and not w.running)]
        for worker in workers:
            if worker.leaving or worker.ready_at > now:
                continue
            while queue and len(worker.running) < PER_WORKER:
                task, arrived = queue.popleft()
                waits.append(now - arrived)
                worker.running.append(now + task.duration)
        load_history.append(Load(len(queue), sum(len(w.running) for w in workers)))
        last = len(load_history) - 1
        wanted = scaler(now, lambda t, last=last: load_history[max(0, min(t, last))], replicas)
        if wanted != replicas:
            changes += 1
            staying = [w for w in workers if not w.leaving]
            if wanted > len(staying):
                workers += [Worker(ready_at=now + STARTUP) for _ in range(wanted - len(staying))]
            else:
                # Idle (or not yet started) workers leave first, then the least busy.
                for worker in sorted(staying, key=lambda w: len(w.running))[
                    : len(staying) - wanted
                ]:
                    worker.leaving = True
            replicas = wanted
        worker_seconds += sum(1 for w in workers if not w.leaving or w.running)
    return Outcome(changes, waits, worker_seconds / 60)


@dataclass(frozen=True, slots=True)
class SeedResult:
    seed: int
    trace: Trace
    outcomes: dict[str, Outcome]

    def per_shift(self, model: str) -> float:
        return self.outcomes[model].changes / self.trace.shifts

    def p95(self, model: str) -> float:
        return p95(self.outcomes[model].waits)

    @property
    def changes_ok(self) -> bool:
        return self.per_shift(SEXTANT) <= TARGET_CHANGES_PER_SHIFT

    @property
    def waits_ok(self) -> bool:
        return all(self.p95(SEXTANT) <= self.p95(model) for model in MODELS)


SEXTANT, HPA, KEDA = "Sextant", "HPA default", "KEDA chart default"
MODELS = (SEXTANT, HPA, KEDA)


def run(make: Callable[[int, random.Random], Trace], minutes: int, seed: int,
        down_window: int, down_window_max: int = 1200,
        up_limit: int | None = None) -> SeedResult:  # fmt: skip
    """One trace of one seed through the three models."""
    trace = make(minutes, random.Random(seed))
    scalers = {SEXTANT: (sextant(down_window, down_window_max, up_limit), MIN_WORKERS),
               HPA: (hpa(), MIN_WORKERS),
               KEDA: (keda(), 0)}  # fmt: skip
    outcomes = {name: simulate(trace, scaler, start) for name, (scaler, start) in scalers.items()}
    return SeedResult(seed, trace, outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--seed", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument(
        "--down-window", type=int, default=300, help="Sextant's scale-down window, seconds"
    )
    parser.add_argument(
        "--down-window-max", type=int, default=1200,
        help="the longest flap damping makes Sextant's window, seconds (0: no damping)",
    )  # fmt: skip
    parser.add_argument(
        "--up-limit", type=int, default=None,
        help="Sextant's scale-up limit, workers per decision (default: the policy's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(
        f"flapping: {args.minutes} min per trace, levels shift every {LEVEL_SECONDS // 60} min, "
        f"{PER_WORKER} tasks per worker, workers in [{MIN_WORKERS}, {MAX_WORKERS}] "
        f"(KEDA [0, {MAX_WORKERS}]), worker start-up {STARTUP} s, Sextant's down window "
        f"{args.down_window} s (damped up to {args.down_window_max} s), up-limit "
        f"{args.up_limit or Policy(1, 1, 1).up_limit} workers per decision, "
        f"seeds {' '.join(map(str, args.seed))}"
    )
    ok = True
    for make in (sawtooth, bursty):
        results = [
            run(make, args.minutes, seed, args.down_window, args.down_window_max, args.up_limit)
            for seed in args.seed
        ]
        print(f"\n{make.__name__}:")
        if len(results) == 1:
            print(_detail(results[0]))
        print(_per_seed(results))
        changes_ok = sum(r.changes_ok for r in results)
        waits_ok = sum(r.waits_ok for r in results)
        mean = sum(r.per_shift(SEXTANT) for r in results) / len(results)
        print(
            f"Sextant changes per level shift <= {TARGET_CHANGES_PER_SHIFT} on {changes_ok} of "
            f"{len(results)} seeds (mean {mean:.2f}): {verdict(changes_ok == len(results))}; "
            f"p95 wait no worse than HPA and KEDA on {waits_ok} of {len(results)} seeds: "
            f"{verdict(waits_ok == len(results))}"
        )
        ok = ok and changes_ok == waits_ok == len(results)
    return 0 if ok else 1


def _detail(result: SeedResult) -> str:
    trace = result.trace
    rows = [
        [name, outcome.changes, trace.shifts, outcome.changes / trace.shifts, p95(outcome.waits),
         max(outcome.waits), outcome.worker_minutes]
        for name, outcome in result.outcomes.items()
    ]  # fmt: skip
    headers = ["model", "changes", "shifts", "per shift", "p95 wait s", "max wait s",
               "worker-min"]  # fmt: skip
    return f"seed {result.seed}: {len(trace.tasks):,} tasks, levels {trace.levels}\n" + table(
        headers, rows
    )


def _per_seed(results: list[SeedResult]) -> str:
    rows = [
        [r.seed, " ".join(map(str, r.trace.levels)),
         *(r.per_shift(m) for m in MODELS), *(r.p95(m) for m in MODELS),
         *(r.outcomes[m].worker_minutes for m in MODELS),
         verdict(r.changes_ok), verdict(r.waits_ok)]
        for r in results
    ]  # fmt: skip
    headers = ["seed", "levels", "S/shift", "H/shift", "K/shift", "S p95 s", "H p95 s",
               "K p95 s", "S w-min", "H w-min", "K w-min", "changes", "wait"]  # fmt: skip
    legend = "  (S Sextant, H HPA default, K KEDA chart default; p95 wait for a slot)"
    return table(headers, rows) + "\n" + legend


if __name__ == "__main__":
    sys.exit(main())
