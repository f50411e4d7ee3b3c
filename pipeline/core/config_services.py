"""The [[services]] tables of pipeline.toml: each read strictly, then checked together (unique names and
ports, known bases and dependencies)."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.config import (
    CHECK_KINDS,
    CHECK_PLACES,
    HTTP_METHODS,
    Base,
    FunctionalCheck,
    Infra,
    Probe,
    Service,
)
from pipeline.core.config_reader import Table, check_name, items_of, path_in, platforms_in


def read_services(top: Table, root: Path, bases: dict[str, Base], infra: dict[str, Infra],
                  check_files: bool) -> list[Service]:
    """Every [[services]] table as a Service; ConfigError (one line, exit 2) for the first mistake."""
    def read_probe(pt: Table) -> Probe:
        p = Probe(method=pt.text("method", "GET", choices=HTTP_METHODS), path=pt.text("path"),
                  status=pt.integer("status", 200, lo=100, hi=599), body_contains=pt.text("body_contains", ""))
        if not p.path.startswith("/"):
            pt.fail(pt.key("path"), f"'{p.path}' does not start with '/'", "write an absolute URL path like /health")
        pt.done()
        return p

    def read_check(ct: Table, places: tuple[str, ...] | None = None) -> FunctionalCheck:
        """One `checks` entry; `places` given: an entry of the older `smoke_checks`, which has no `in`."""
        c = FunctionalCheck(kind=ct.text("kind", choices=CHECK_KINDS), path=ct.text("path"),
                            places=places or ct.texts("in", CHECK_PLACES, choices=CHECK_PLACES))
        if not c.path.startswith("/"):
            ct.fail(ct.key("path"), f"'{c.path}' does not start with '/'", "write an absolute URL path like /ready")
        if not c.places:
            ct.fail(ct.key("in"), "is empty", f"list where the check runs: {', '.join(CHECK_PLACES)} (or remove it)")
        ct.done()
        return c

    def read_checks(st: Table) -> tuple[FunctionalCheck, ...]:
        """`checks`; the older `smoke_checks` (before checks also ran in verify) still means smoke only."""
        if "smoke_checks" in st.data and "checks" in st.data:
            st.fail(st.key("smoke_checks"), "given with `checks`: `smoke_checks` is the older spelling of `checks`",
                    'move its entries into `checks` with in = ["smoke"] (or no `in`: smoke and verify)')
        if "smoke_checks" in st.data:
            return tuple(items_of(st, "smoke_checks", lambda ct: read_check(ct, ("smoke",)), required=False))
        return tuple(items_of(st, "checks", read_check, required=False))

    def read_service(st: Table) -> Service:
        name = st.text("name")
        check_name(st, st.key("name"), name)
        ba = st.table("build_args", required=False)
        args = tuple((k, ba.text(k)) for k in list(ba.data))
        ba.done()
        svc = Service(
            name=name,
            context=path_in(st, root, "context", must_exist=check_files, is_dir=True),
            dockerfile=path_in(st, root, "dockerfile", must_exist=check_files, is_dir=False),
            repository=st.text("repository", name),
            port=st.integer("port", lo=1, hi=65535),
            health_path=st.text("health_path", "/health"),
            ready_path=st.text("ready_path", "/ready"),
            depends_on=st.texts("depends_on", ()),
            bases=st.texts("bases", ()),
            probes=tuple(items_of(st, "probes", read_probe, required=False)),
            volumes=st.texts("volumes", ()),
            build_args=args,
            checks=read_checks(st),
            platforms=platforms_in(st),
        )
        for bn in svc.bases:
            if bn not in bases:
                st.fail(st.key("bases"), f"unknown base '{bn}'", f"use one of the [bases] tables: {', '.join(bases)}")
        st.done()
        return svc

    services = items_of(top, "services", read_service)
    seen: set[str] = set()
    ports: dict[int, str] = {}
    for i, svc in enumerate(services):
        if svc.name in seen:
            top.fail(f"services[{i}].name", f"duplicate service name '{svc.name}'", "give every service a unique name")
        seen.add(svc.name)
        if svc.port in ports:
            top.fail(f"services[{i}].port", f"port {svc.port} already used by '{ports[svc.port]}'",
                     "give every service its own port")
        ports[svc.port] = svc.name
    known = seen | set(infra)
    for i, svc in enumerate(services):
        for dep in svc.depends_on:
            if dep == svc.name:
                top.fail(f"services[{i}].depends_on", f"'{svc.name}' depends on itself", "remove it from depends_on")
            if dep not in known:
                top.fail(f"services[{i}].depends_on", f"unknown service '{dep}'",
                         f"use one of: {', '.join(sorted(known))}")
    return services
