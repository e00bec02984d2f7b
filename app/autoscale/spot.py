"""Spot-first GPU capacity under preemption: node pools, preemption waves, placement policies.

The model behind `bench/spot.py`, minute by minute, for one region's GPU node pools:

* `PoolSpec`: a node pool (spot or on-demand) across the region's GPU zones, its size limit,
  its GPU slots per node (GKE GPU time-sharing: Triton replicas per node), its price, and
  how long a new node takes to serve (VM boot, driver, image, model load).
* `PreemptionSpec` → `preemption_plan`: waves (Compute Engine reclaims a share of a zone's
  spot VMs at once, and the zone then has no spot capacity for a while) and background
  preemptions of single nodes. The plan is drawn once from a seed and does not depend on
  the policy, so every policy meets the same events (common random numbers).
* `Fleet`: the nodes, what they cost (every minute a node exists, booting included; a
  creation that fails is not billed) and which zones back off after a failed creation
  (the cluster autoscaler's exponential backoff, 5 to 30 minutes).
* Policies: `OnDemandOnly`, and `SpotFirst`, the GKE ComputeClass behaviour the platform
  configures: spot first with spare spot nodes as headroom that absorbs part of a wave,
  on-demand when spot cannot be had, and active migration back to spot once it can
  (``fallback=False`` is the spot-only baseline with the same headroom).

`simulate` runs a demand series (GPU slots needed, one value per minute) through a policy
and returns served capacity, violating minutes, cost and spot share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PoolSpec:
    name: str
    spot: bool
    max_nodes: int
    slots_per_node: int
    usd_per_node_hour: float
    provision_minutes: int = 5

    def __post_init__(self) -> None:
        if self.max_nodes < 0 or self.slots_per_node < 1 or self.provision_minutes < 0:
            raise ValueError(f"pool {self.name}: max_nodes >= 0, slots_per_node >= 1")
        if self.usd_per_node_hour < 0:
            raise ValueError(f"pool {self.name}: usd_per_node_hour must be >= 0")


@dataclass(frozen=True)
class PreemptionSpec:
    waves_per_day: float = 2.0  # across the region's zones
    wave_fraction: tuple[float, float] = (0.5, 1.0)  # share of the zone's spot nodes taken
    stockout_minutes: tuple[int, int] = (30, 120)  # the zone has no spot capacity after it
    node_preemptions_per_day: float = 0.2  # background hazard of each spot node
    # Share of waves that hit every zone of the region at once (a regional GPU crunch).
    region_wide_share: float = 0.3
    # UTC minutes of the day waves fall in: when Compute Engine's own demand peaks, here
    # the US working day (13:00-22:00 UTC).
    busy_window: tuple[int, int] = (13 * 60, 22 * 60)

    def __post_init__(self) -> None:
        if self.waves_per_day < 0 or self.node_preemptions_per_day < 0:
            raise ValueError("preemption rates must be >= 0")
        low, high = self.wave_fraction
        if not 0 <= low <= high <= 1:
            raise ValueError(
                f"wave_fraction must satisfy 0 <= low <= high <= 1 (got {low}, {high})"
            )
        if not 0 <= self.stockout_minutes[0] <= self.stockout_minutes[1]:
            raise ValueError("stockout_minutes must be an ordered, non-negative range")
        if not 0 <= self.region_wide_share <= 1:
            raise ValueError(f"region_wide_share must be in [0, 1] (got {self.region_wide_share})")
        if not 0 <= self.busy_window[0] < self.busy_window[1] <= 1440:
            raise ValueError(
                f"busy_window must be UTC minutes within a day (got {self.busy_window})"
            )


@dataclass(frozen=True)
class Wave:
    minute: int
    zone: str
    fraction: float
    stockout_until: int


@dataclass(frozen=True)
class PreemptionPlan:
    waves: tuple[Wave, ...]
    # Background events: (minute, zone, uniform draw choosing whether and which node dies).
    singles: tuple[tuple[int, str, float], ...]
    max_spot_nodes_per_zone: int

    def stocked_out(self, zone: str, minute: int) -> bool:
        return any(w.zone == zone and w.minute <= minute < w.stockout_until for w in self.waves)


def preemption_plan(
    spec: PreemptionSpec,
    zones: Sequence[str],
    minutes: int,
    max_spot_nodes: int,
    rng: np.random.Generator,
) -> PreemptionPlan:
    """Draw waves and background preemptions for ``minutes`` (a Poisson process each).

    Background events are drawn at the rate the pool would see if it were full and thinned
    when it is not (an event hits a live node with probability live / per-zone maximum),
    so the same draws serve every policy."""
    days = minutes / 1440.0
    waves = []
    low, high = spec.busy_window
    for _ in range(int(rng.poisson(spec.waves_per_day * days))):
        day = int(rng.integers(0, max(math.ceil(days), 1)))
        minute = day * 1440 + int(rng.integers(low, high))
        fraction = float(rng.uniform(*spec.wave_fraction))
        stockout = int(rng.integers(spec.stockout_minutes[0], spec.stockout_minutes[1] + 1))
        hit = (
            list(zones)
            if rng.random() < spec.region_wide_share
            else [zones[int(rng.integers(0, len(zones)))]]
        )
        if minute < minutes:
            waves += [Wave(minute, str(zone), fraction, minute + stockout) for zone in hit]
    per_zone = max(1, math.ceil(max_spot_nodes / max(len(zones), 1)))
    singles = []
    rate = spec.node_preemptions_per_day * per_zone * days
    for zone in zones:
        for _ in range(int(rng.poisson(rate))):
            singles.append((int(rng.integers(0, minutes)), str(zone), float(rng.random())))
    waves.sort(key=lambda w: w.minute)
    singles.sort()
    return PreemptionPlan(tuple(waves), tuple(singles), per_zone)


@dataclass
class Node:
    pool: PoolSpec
    zone: str
    created: int
    ready_at: int
    # A creation into a stocked-out zone fails at this minute (never becomes ready).
    fails_at: int | None = None
    replaces_on_demand: bool = False

    def ready(self, now: int) -> bool:
        return self.fails_at is None and self.ready_at <= now


@dataclass
class Fleet:
    """The region's GPU nodes, the cost so far, and per-(pool, zone) creation backoff."""

    zones: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    usd: float = 0.0
    node_minutes: dict[bool, float] = field(default_factory=lambda: {True: 0.0, False: 0.0})
    preempted: int = 0
    failed_creations: int = 0
    # The minute spot nodes were last reclaimed (their 30-second notice says so).
    last_preemption: int | None = None
    _backoff_until: dict[tuple[str, str], int] = field(default_factory=dict)
    _backoff_minutes: dict[tuple[str, str], int] = field(default_factory=dict)

    def alive(self, pool: PoolSpec | None = None) -> list[Node]:
        return [n for n in self.nodes if pool is None or n.pool.name == pool.name]

    def ready_slots(self, now: int) -> int:
        return sum(n.pool.slots_per_node for n in self.nodes if n.ready(now))

    def can_create(self, pool: PoolSpec, zone: str, now: int) -> bool:
        until = self._backoff_until.get((pool.name, zone))
        return until is None or until <= now

    def create(self, pool: PoolSpec, zone: str, now: int, plan: PreemptionPlan) -> Node:
        node = Node(pool, zone, now, now + pool.provision_minutes)
        if pool.spot and plan.stocked_out(zone, now):
            # Compute Engine answers ZONE_RESOURCE_POOL_EXHAUSTED within a couple of minutes.
            node.fails_at = now + 2
        self.nodes.append(node)
        return node

    def remove(self, node: Node) -> None:
        self.nodes.remove(node)

    def step(
        self,
        now: int,
        plan: PreemptionPlan,
        waves: Sequence[Wave],
        singles: Sequence[tuple[int, str, float]],
    ) -> None:
        """Apply this minute's failed creations and preemptions, then bill the minute."""
        for node in [n for n in self.nodes if n.fails_at is not None and n.fails_at <= now]:
            self.nodes.remove(node)
            self.failed_creations += 1
            key = (node.pool.name, node.zone)
            backoff = min(self._backoff_minutes[key] * 2, 30) if key in self._backoff_minutes else 5
            self._backoff_minutes[key] = backoff
            self._backoff_until[key] = now + backoff
        for node in self.nodes:
            if node.fails_at is None and node.ready_at == now:
                self._backoff_minutes.pop((node.pool.name, node.zone), None)
        for wave in waves:
            victims = [n for n in self.nodes if n.pool.spot and n.zone == wave.zone]
            taken = math.ceil(len(victims) * wave.fraction - 1e-9)
            for node in sorted(victims, key=lambda n: n.created)[:taken]:
                self.nodes.remove(node)
                self.preempted += 1
                self.last_preemption = now
            # The zone has no spot capacity left: its nodes still booting fail too.
            for node in self.nodes:
                if node.pool.spot and node.zone == wave.zone and not node.ready(now):
                    node.fails_at = min(node.fails_at or now + 2, now + 2)
        for _, zone, draw in singles:
            live = sorted(
                (n for n in self.nodes if n.pool.spot and n.zone == zone and n.fails_at is None),
                key=lambda n: n.created,
            )
            index = int(draw * plan.max_spot_nodes_per_zone)
            if index < len(live):
                self.nodes.remove(live[index])
                self.preempted += 1
                self.last_preemption = now
        for node in self.nodes:
            if node.fails_at is None:
                self.usd += node.pool.usd_per_node_hour / 60.0
                self.node_minutes[node.pool.spot] += 1.0


class Policy:
    """Decides which nodes to create and remove each minute, given the slots wanted."""

    name = "policy"

    def __init__(self, pools: Sequence[PoolSpec], zones: Sequence[str]):
        self.pools = tuple(pools)
        self.zones = tuple(zones)
        self._surplus_since: int | None = None

    def nodes_for(self, slots: int, pool: PoolSpec) -> int:
        return math.ceil(slots / pool.slots_per_node)

    def reconcile(self, fleet: Fleet, wanted_slots: int, now: int, plan: PreemptionPlan) -> None:
        raise NotImplementedError

    # ---- shared mechanics

    def _zone_order(self, fleet: Fleet, pool: PoolSpec, now: int) -> list[str]:
        """Zones the pool may create in now, least loaded first (balanced spreading)."""
        usable = [z for z in self.zones if fleet.can_create(pool, z, now)]
        count = {z: sum(1 for n in fleet.alive(pool) if n.zone == z) for z in usable}
        return sorted(usable, key=lambda z: (count[z], self.zones.index(z)))

    def _grow(
        self, fleet: Fleet, pool: PoolSpec, wanted: int, now: int, plan: PreemptionPlan
    ) -> int:
        """Create up to ``wanted`` nodes in ``pool``; returns how many were created."""
        created = 0
        while created < wanted and len(fleet.alive(pool)) < pool.max_nodes:
            zones = self._zone_order(fleet, pool, now)
            if not zones:
                break
            fleet.create(pool, zones[0], now, plan)
            created += 1
        return created

    def _shrink(self, fleet: Fleet, target_slots: int, now: int, order: Sequence[PoolSpec]) -> None:
        """Remove ready nodes the target does not need, pools in ``order``, once the ready
        nodes alone have exceeded it for 10 minutes (the cluster autoscaler's
        scale-down-unneeded-time). Booting nodes are left alone: one may yet fail."""
        surplus = _ready_capacity(fleet, now) - target_slots
        if surplus <= 0:
            self._surplus_since = None
            return
        if self._surplus_since is None:
            self._surplus_since = now
        if now - self._surplus_since < 10:
            return
        for pool in order:
            ready = sorted((n for n in fleet.alive(pool) if n.ready(now)), key=lambda n: -n.created)
            for node in ready:
                if surplus < pool.slots_per_node:
                    return
                fleet.remove(node)
                surplus -= pool.slots_per_node


def _capacity(fleet: Fleet) -> int:
    """Slots of the nodes ready or booting, migration replacements aside (they only take an
    on-demand node's place). A creation that will fail counts until it does: the policy
    learns of a stock-out from the failure, as the autoscaler does."""
    return sum(n.pool.slots_per_node for n in fleet.nodes if not n.replaces_on_demand)


def _ready_capacity(fleet: Fleet, now: int) -> int:
    return sum(n.pool.slots_per_node for n in fleet.nodes if n.ready(now))


class OnDemandOnly(Policy):
    name = "on-demand only"

    def reconcile(self, fleet: Fleet, wanted_slots: int, now: int, plan: PreemptionPlan) -> None:
        pool = next(p for p in self.pools if not p.spot)
        have = _capacity(fleet)
        if have < wanted_slots:
            self._surplus_since = None
            self._grow(fleet, pool, self.nodes_for(wanted_slots - have, pool), now, plan)
        else:
            self._shrink(fleet, wanted_slots, now, [pool])


class SpotFirst(Policy):
    """Spot with spare spot nodes as headroom; with ``fallback``, on-demand nodes for what
    spot cannot give (every zone backing off, or the spot pool full), replaced by spot again
    once spot can be had (``migrate_back``)."""

    def __init__(
        self,
        pools: Sequence[PoolSpec],
        zones: Sequence[str],
        headroom: float = 0.15,
        fallback: bool = True,
        migrate_back: bool = True,
        hedge_minutes: int = 10,
    ):
        super().__init__(pools, zones)
        self.spot = next(p for p in self.pools if p.spot)
        self.on_demand = next(p for p in self.pools if not p.spot)
        if not 0 <= headroom <= 1:
            raise ValueError(f"headroom must be in [0, 1] (got {headroom})")
        self.headroom = headroom
        self.fallback = fallback
        self.migrate_back = migrate_back and fallback
        # After a preemption, spot is likely short for a while: cover the demand on
        # on-demand at once instead of after a failed spot creation.
        self.hedge_minutes = hedge_minutes if fallback else 0
        self.name = "spot-first + on-demand fallback" if fallback else "spot only"

    def reconcile(self, fleet: Fleet, wanted_slots: int, now: int, plan: PreemptionPlan) -> None:
        spot, od = self.spot, self.on_demand
        # Headroom lives on spot: whole spare nodes that absorb part of a wave.
        target = wanted_slots + max(spot.slots_per_node, math.ceil(wanted_slots * self.headroom))
        have = _capacity(fleet)
        if have < target:
            self._surplus_since = None
            recent = fleet.last_preemption is not None and (
                now - fleet.last_preemption < self.hedge_minutes
            )
            if recent and wanted_slots > have:
                # Demand first on on-demand, then spot for the rest and the headroom.
                self._grow(fleet, od, self.nodes_for(wanted_slots - have, od), now, plan)
                have = _capacity(fleet)
            missing = self.nodes_for(max(target - have, 0), spot)
            created = self._grow(fleet, spot, missing, now, plan)
            # Fall back for what spot cannot give now (zones backing off or pool full),
            # but only for the demand itself: headroom on on-demand is not worth its price.
            shortfall = wanted_slots - _capacity(fleet)
            if self.fallback and created < missing and shortfall > 0:
                self._grow(fleet, od, self.nodes_for(shortfall, od), now, plan)
        else:
            self._shrink(fleet, target, now, [od, spot])
        if self.migrate_back:
            self._migrate(fleet, now, plan)

    def _migrate(self, fleet: Fleet, now: int, plan: PreemptionPlan) -> None:
        """Replace on-demand nodes by spot ones, removing each on-demand node only once its
        replacement serves (GKE ComputeClass active migration)."""
        spot, od = self.spot, self.on_demand
        on_demand = fleet.alive(od)
        replacements = [n for n in fleet.alive(spot) if n.replaces_on_demand]
        for node in replacements:
            if node.ready(now):
                if on_demand:
                    fleet.remove(on_demand.pop())
                node.replaces_on_demand = False
        pending = sorted(
            (n for n in fleet.alive(spot) if n.replaces_on_demand), key=lambda n: n.created
        )
        # On-demand nodes scaled down meanwhile need no replacement any more.
        for node in pending[len(on_demand) :]:
            fleet.remove(node)
        needed = len(on_demand) - len(pending)
        while needed > 0 and len(fleet.alive(spot)) < spot.max_nodes:
            zones = self._zone_order(fleet, spot, now)
            if not zones:
                break
            fleet.create(spot, zones[0], now, plan).replaces_on_demand = True
            needed -= 1


@dataclass(frozen=True)
class SpotOutcome:
    policy: str
    minutes: int
    violating_minutes: int  # ready slots below the slots needed
    served_fraction: float  # slot-minutes served over slot-minutes needed
    usd: float
    spot_share: float  # spot node-minutes over all GPU node-minutes
    preempted: int
    failed_creations: int
    ready_slots: np.ndarray = field(repr=False)

    @property
    def violating_fraction(self) -> float:
        return self.violating_minutes / self.minutes if self.minutes else 0.0


def simulate(
    policy: Policy,
    needed: np.ndarray,
    plan: PreemptionPlan,
    lookahead: int = 5,
    observe: Callable[[int, Fleet], None] | None = None,
) -> SpotOutcome:
    """Run ``needed`` (GPU slots, one value per minute) through ``policy``. The policy is
    asked for the most slots needed over the next ``lookahead`` minutes (replicas are
    requested ahead of load by the predictive scaler). ``observe(minute, fleet)`` sees the
    fleet each minute as it was billed and served, before the policy acts."""
    needed = np.asarray(needed, dtype=np.int64)
    n = len(needed)
    fleet = Fleet(policy.zones)
    wave_at: dict[int, list[Wave]] = {}
    for w in plan.waves:
        wave_at.setdefault(w.minute, []).append(w)
    single_at: dict[int, list[tuple[int, str, float]]] = {}
    for s in plan.singles:
        single_at.setdefault(s[0], []).append(s)
    # Start the day with the fleet the policy would have built, all ready.
    policy.reconcile(fleet, int(needed[: lookahead + 1].max()), -1_000, plan)
    for node in fleet.nodes:
        node.ready_at = -1
    ahead = np.array([needed[t : t + lookahead + 1].max() for t in range(n)])
    ready_slots = np.zeros(n, dtype=np.int64)
    served = 0
    for t in range(n):
        # The minute's preemptions and bill, what serves in it, then the policy's moves.
        fleet.step(t, plan, wave_at.get(t, []), single_at.get(t, []))
        ready_slots[t] = fleet.ready_slots(t)
        served += min(int(ready_slots[t]), int(needed[t]))
        if observe is not None:
            observe(t, fleet)
        policy.reconcile(fleet, int(ahead[t]), t, plan)
    total_minutes = fleet.node_minutes[True] + fleet.node_minutes[False]
    return SpotOutcome(
        policy=policy.name,
        minutes=n,
        violating_minutes=int((ready_slots < needed).sum()),
        served_fraction=served / max(int(needed.sum()), 1),
        usd=fleet.usd,
        spot_share=fleet.node_minutes[True] / total_minutes if total_minutes else 0.0,
        preempted=fleet.preempted,
        failed_creations=fleet.failed_creations,
        ready_slots=ready_slots,
    )
