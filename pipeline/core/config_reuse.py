"""`reuse_from`: the environments whose registries a plan may reuse an image from (by input digest), per environment.

    [environments.prod]
    reuse_from = ["staging", "dev"]     # looked up in this order, after prod's own repository

A plan takes an image from such a repository only when that environment's trusted keys signed and attested it
(pipeline/stages/registry_reuse.py), so a source must be an environment that signs or verifies its images ("sign"
or "verify-images" among its stages; the same rule as promotion's trust gate, pipeline/stages/sign.py
check_before_promotion): otherwise nothing could ever vouch for what it holds, and the key is refused at load.
Cycles are allowed (dev reuse_from prod and prod reuse_from dev): a lookup goes one step, into the named
environment's own repository, and trusts only that environment's keys, so nothing is reused through a chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pipeline.core.config_reader import Table


class _Env(Protocol):   # the fields of core.config.Environment read here (that module imports this one)
    @property
    def name(self) -> str: ...
    @property
    def stages(self) -> tuple[str, ...]: ...
    @property
    def reuse_from(self) -> tuple[str, ...]: ...


def read_reuse_from(et: Table) -> tuple[str, ...]:
    """`reuse_from` of one [environments.<env>] table: a list of environment names, () when absent."""
    return et.texts("reuse_from", ())


def check_reuse_from(envs_t: Table, environments: Mapping[str, _Env]) -> None:
    """Every `reuse_from` names another known environment that signs or verifies its images;
    ConfigError (exit 2) naming `environments.<env>.reuse_from` otherwise."""
    for env in environments.values():
        key = f"environments.{env.name}.reuse_from"
        others = [n for n in environments if n != env.name]
        for src in env.reuse_from:   # a name listed twice is refused by Table.texts
            if src == env.name:
                envs_t.fail(key, f"'{src}' is the environment itself (its own repository is always looked up "
                                 "first)", f"remove '{src}'")
            if src not in environments:
                envs_t.fail(key, f"'{src}' is not an environment", f"use one of: {', '.join(others) or 'none'}")
            source = environments[src]
            if "sign" not in source.stages and "verify-images" not in source.stages:
                envs_t.fail(key, f"{src} neither signs nor verifies its images, so no trusted key could vouch for "
                                 f"an image in its repository",
                            f'add "sign" to [environments.{src}].stages, or remove \'{src}\'')
