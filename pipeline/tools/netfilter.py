"""iptables/ip6tables adapter: find and remove the KUBE-* chains (and the jumps into them) that the kubelet
and kube-proxy add."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pipeline.tools import proc

FAMILIES = ("iptables", "ip6tables")


@dataclass(frozen=True)
class KubeRules:
    family: str
    chains: tuple[tuple[str, str], ...]  # (table, chain)
    jumps: tuple[tuple[str, tuple[str, ...]], ...]  # (table, rule spec after -A) in non-KUBE chains


def _save(family: str) -> str | None:
    try:
        res = proc.run([f"{family}-save"], timeout=30, check=False)
    except Exception:
        return None
    return res.stdout if res.ok else None


def kube_rules(family: str) -> KubeRules:
    return parse_save(family, _save(family) or "")


def parse_save(family: str, dump: str) -> KubeRules:
    """The KUBE-* chains of an iptables-save dump, and the rules of other chains that jump into them."""
    table = ""
    chains: list[tuple[str, str]] = []
    jumps: list[tuple[str, tuple[str, ...]]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":KUBE-"):
            chains.append((table, line[1:].split()[0]))
        elif line.startswith("-A ") and "KUBE-" in line and not line.split()[1].startswith("KUBE-"):
            jumps.append((table, tuple(shlex.split(line)[1:])))
    return KubeRules(family, tuple(chains), tuple(jumps))


def remove_kube_rules() -> list[str]:
    """Delete jumps into KUBE-* chains, then flush and delete the chains. Returns what was removed."""
    done: list[str] = []
    for family in FAMILIES:
        rules = kube_rules(family)
        for table, spec in rules.jumps:
            if proc.run([family, "-w", "5", "-t", table, "-D", *spec], timeout=30, check=False).ok:
                done.append(f"{family} -t {table} -D {' '.join(spec)[:80]}")
        for table, chain in rules.chains:
            proc.run([family, "-w", "5", "-t", table, "-F", chain], timeout=30, check=False)
        for table, chain in rules.chains:
            if proc.run([family, "-w", "5", "-t", table, "-X", chain], timeout=30, check=False).ok:
                done.append(f"{family} -t {table} -X {chain}")
    return done


def kube_chains_left() -> list[str]:
    return [f"{f}:{t}/{c}" for f in FAMILIES for t, c in kube_rules(f).chains]

