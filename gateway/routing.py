"""Where a request goes: the gateway's view of services, catalog and swaps, and the decision for one model name.

The view is read from the database off the request path (see runtime.py) and kept as immutable snapshots, so
deciding costs no query: `route_decide` is a pure function of a model name and the snapshots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from catalog.selectors import model_list
from cluster.models import ServiceKind, SparkHost
from cluster.selectors import service_base_url, service_is_disabled, service_last_probe, service_list
from cluster.services import cluster_settings_get
from swaps.models import ACTIVE_STATES, ServingState, Swap, SwapState

HEAD_SERVICE_KEY = "vllm"
# From `stopping` on, the old container is going away: the outgoing model is refused, the incoming one held.
STOPPING_STATES = frozenset({SwapState.STOPPING, SwapState.LAUNCHING, SwapState.LOADING})
TERMINAL = frozenset({SwapState.READY, SwapState.FAILED, SwapState.CANCELLED, SwapState.INTERRUPTED})


@dataclass(frozen=True)
class ServiceRoute:
    """One enabled service the gateway can send requests to."""

    key: str
    kind: str
    base_url: str
    cap: int
    models: tuple[str, ...]
    status: str
    head: bool


@dataclass(frozen=True)
class Topology:
    """Services and catalog, as the gateway routes them (refreshed about once a second)."""

    services: dict[str, ServiceRoute]
    routes: dict[str, str]  # model name -> service key (models_served of the services, head vLLM's included)
    catalog: dict[str, str]  # served model name -> catalog key, enabled entries
    loaded_at: float = 0.0

    @property
    def head(self) -> ServiceRoute | None:
        return self.services.get(HEAD_SERVICE_KEY)


@dataclass(frozen=True)
class SwapView:
    """The parts of a swap the gateway needs."""

    id: str
    model_key: str
    served_name: str
    state: str
    error: str = ""


@dataclass(frozen=True)
class SwapsSnapshot:
    """What the head vLLM serves and which swap is under way (refreshed several times a second during a swap)."""

    serving_key: str
    serving_name: str
    active: SwapView | None
    latest: SwapView | None
    loaded_at: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What to do with one request: serve, hold for a swap, start a swap, or refuse."""

    action: str  # "serve" | "hold" | "swap" | "refuse"
    service: ServiceRoute | None = None
    head_key: str | None = None  # the catalog key a head-vLLM request is counted under for the drain
    swap_id: str = ""
    model_key: str = ""
    status: int = 0
    message: str = ""
    code: str = ""
    retry_after: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def topology_load() -> Topology:
    """Read the enabled services and the enabled catalog entries."""
    cluster = cluster_settings_get()
    hosts = list(SparkHost.objects.filter(enabled=True))
    services: dict[str, ServiceRoute] = {}
    routes: dict[str, str] = {}
    for service in service_list():
        if service_is_disabled(service=service, cluster=cluster):
            continue
        if service.kind in (ServiceKind.QDRANT, ServiceKind.HTTP):
            continue  # not an OpenAI-style API
        models = tuple(str(name) for name in (service.models_served or []) if name)
        route = ServiceRoute(
            key=service.key,
            kind=service.kind,
            base_url=service_base_url(service=service, cluster=cluster, hosts=hosts),
            cap=int(service.max_in_flight or 0),
            models=models,
            status=str(service_last_probe(service=service)["status"]),
            head=service.key == HEAD_SERVICE_KEY,
        )
        services[service.key] = route
        for name in models:
            routes.setdefault(name, service.key)
    head = services.get(HEAD_SERVICE_KEY)
    if head is not None:
        for name in head.models:
            routes[name] = head.key  # the head vLLM wins a name two services claim
    catalog = {entry.effective_served_name: entry.key for entry in model_list(enabled_only=True)}
    return Topology(services=services, routes=routes, catalog=catalog, loaded_at=time.monotonic())


SWAP_VIEW_FIELDS = ("id", "model_key", "state", "error", "model__served_model_name", "model__key")


def _swap_view(row: tuple | None) -> SwapView | None:
    """A `SWAP_VIEW_FIELDS` row as the gateway sees it (the served name as `ModelEntry.effective_served_name`)."""
    if row is None:
        return None
    swap_id, model_key, state, error, served_model_name, entry_key = row
    served = (served_model_name or entry_key) if entry_key is not None else model_key
    return SwapView(id=str(swap_id), model_key=model_key, served_name=served, state=state, error=error)


def swaps_load() -> SwapsSnapshot:
    """Read what is served and the active and latest real (not dry-run) swaps: three small indexed queries.

    Only the columns a `SwapView` needs are read, as tuples: the refresher runs this four times a second in every
    web process, and whole rows (the swap's checks and commands as JSON, its catalog entry) cost ~5 ms of
    interpreter time a read, which the serving loop waited out.

    The swaps are read before what is served: a swap finishing in between then shows as still active with its
    model already served (a hold that resolves on the next tick), never as "neither active nor served".
    """
    real = Swap.objects.filter(dry_run=False).values_list(*SWAP_VIEW_FIELDS)
    active = real.filter(active=True, state__in=ACTIVE_STATES).first()
    latest = active or real.order_by("-created_at").first()
    serving = ServingState.objects.filter(pk=1).values_list("model_key", "served_model_name").first() or ("", "")
    return SwapsSnapshot(
        serving_key=serving[0],
        serving_name=serving[1],
        active=_swap_view(active),
        latest=_swap_view(latest),
        loaded_at=time.monotonic(),
    )


def _not_found(model: str, known: list[str]) -> Decision:
    return Decision(
        action="refuse",
        status=404,
        code="model_not_found",
        message=f"model {model!r} is not served here; known models: {', '.join(known) or '(none)'}",
        extra={"models": known},
    )


def route_decide(
    *,
    model: str,
    default_kind: str | None,
    topology: Topology,
    swaps: SwapsSnapshot,
    draining: dict[str, str],
    on_demand: bool,
    retry_after: int,
) -> Decision:
    """Decide for one model name. `draining` maps a stopping swap this process has been told about to its
    incoming model key (it may be newer than `swaps`)."""
    head = topology.head
    active = swaps.active
    if draining and (active is None or active.id not in draining):
        swap_id, incoming = next(iter(draining.items()))
        name = next((n for n, k in topology.catalog.items() if k == incoming), incoming)
        active = SwapView(id=swap_id, model_key=incoming, served_name=name, state=SwapState.STOPPING)
    if not model:
        candidates = [s for s in topology.services.values() if default_kind and s.kind == default_kind]
        if len(candidates) == 1:
            return Decision(action="serve", service=candidates[0])
        return Decision(action="refuse", status=400, code="model_required", message="'model' is required")
    if head is not None and active is not None and model == active.served_name:
        return Decision(action="hold", swap_id=active.id, model_key=active.model_key)
    refusing = active is not None and (active.state in STOPPING_STATES or active.id in draining)
    head_key = None
    if head is not None and swaps.serving_name and model == swaps.serving_name:
        head_key = swaps.serving_key or model
    elif head is not None and model in head.models:
        head_key = topology.catalog.get(model, model)
    if head_key is not None:
        if refusing:
            return Decision(
                action="refuse",
                status=503,
                code="model_swapping_out",
                message=f"model {model!r} is being swapped out for {active.served_name!r}; retry later",
                retry_after=retry_after,
            )
        return Decision(action="serve", service=head, head_key=head_key)
    service_key = topology.routes.get(model)
    if service_key is not None:
        return Decision(action="serve", service=topology.services[service_key])
    if head is not None and model in topology.catalog:
        key = topology.catalog[model]
        failed = _swap_failed(swaps.latest)
        if failed is not None and swaps.latest.model_key == key:
            # The last attempt to load it failed: say so rather than "not loaded" (and do not retry on demand).
            return failed
        if on_demand:
            return Decision(action="swap", model_key=key)
        serving = swaps.serving_name or "nothing"
        return Decision(
            action="refuse",
            status=404,
            code="model_not_loaded",
            message=(
                f"model {model!r} is in the catalog but not loaded (vLLM serves {serving}); "
                "swap to it first (POST /api/swap) or turn on on-demand swaps (SPARKCONTROL_GATEWAY_ON_DEMAND)"
            ),
            extra={"models": [entry["id"] for entry in models_list(topology=topology, swaps=swaps, on_demand=False)]},
        )
    known = [entry["id"] for entry in models_list(topology=topology, swaps=swaps, on_demand=on_demand)]
    return _not_found(model, known)


def held_outcome(*, swap_id: str, swaps: SwapsSnapshot) -> Decision | None:
    """A refusal when the swap a request was held for ended without serving its model, else None."""
    if swaps.active is not None and swaps.active.id == swap_id:
        return None
    failed = _swap_failed(swaps.latest)
    return failed if failed is not None and swaps.latest.id == swap_id else None


def _swap_failed(latest: SwapView | None) -> Decision | None:
    """The refusal that names how the latest swap ended, when it ended without serving its model."""
    if latest is None or latest.state not in TERMINAL or latest.state == SwapState.READY:
        return None
    detail = f": {latest.error.splitlines()[0][:300]}" if latest.error else ""
    return Decision(
        action="refuse",
        status=503,
        code="swap_failed",
        message=f"the swap to {latest.model_key!r} ended {latest.state}{detail}",
    )


def models_list(*, topology: Topology, swaps: SwapsSnapshot, on_demand: bool) -> list[dict[str, Any]]:
    """`GET /v1/models`: every model a service serves, with its service and state, in OpenAI's list shape."""
    data: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(name: str, service: str, state: str) -> None:
        if name and name not in seen:
            seen.add(name)
            data.append({"id": name, "object": "model", "owned_by": "sparkcontrol", "service": service, "state": state})

    head = topology.head
    active = swaps.active
    if head is not None:
        stopping = active is not None and active.state in STOPPING_STATES
        if active is not None:
            add(active.served_name, head.key, "loading")
        add(swaps.serving_name, head.key, "stopping" if stopping else "ready")
        for name in head.models:
            add(name, head.key, "stopping" if stopping else "ready")
    for service in topology.services.values():
        if not service.head:
            for name in service.models:
                add(name, service.key, service.status)
    if head is not None and on_demand:
        for name in sorted(topology.catalog):
            add(name, head.key, "available")
    return data
