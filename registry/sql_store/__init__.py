"""The metadata store: every query the registry runs is in this package, one SQL for
SQLite (a registry directory's ``registry.db``) and PostgreSQL (a registry on servers).

:class:`SqlStore` (reads, and :meth:`SqlStore.write` for a transaction) and
:class:`Tx` (the writes of one transaction) are composed from one module per kind of
record, each holding that kind's reads and writes and nothing else:

- :mod:`.connection`: the seam every query runs through, and what it hides;
- :mod:`.sqlite`, :mod:`.postgres`: the two connections (each dialect's few spots);
- :mod:`.core`: opening and refusing a database, migrating, transactions, the event log;
- :mod:`.names`: the one namespace, lookups across kinds, soft removal;
- :mod:`.adapters`: adapter versions and aliases;
- :mod:`.catalog`: base models, datasets, manifests;
- :mod:`.rollouts`: canary rollouts and their analyses;
- :mod:`.variants`: quantized variants and adapter x variant results.

The schema's DDL lives in :mod:`registry.migrations`, next to its history.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from registry.sql_store.adapters import AdapterReads, AdapterWrites
from registry.sql_store.catalog import CatalogReads, CatalogWrites
from registry.sql_store.core import Row, now_iso
from registry.sql_store.names import NameReads, NameWrites
from registry.sql_store.rollouts import RolloutReads, RolloutWrites
from registry.sql_store.variants import VariantReads, VariantWrites

__all__ = ["Row", "SqlStore", "Tx", "now_iso"]


class Tx(AdapterWrites, CatalogWrites, RolloutWrites, VariantWrites, NameWrites):
    """The writes of one transaction (only made by :meth:`SqlStore.write`)."""


class SqlStore(NameReads, AdapterReads, CatalogReads, RolloutReads, VariantReads):
    """Metadata of one registry, in ``registry.db`` (:meth:`open`) or a PostgreSQL
    database (:meth:`over` a :class:`~registry.sql_store.postgres.PostgresConnection`)."""

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, one writer at a time (``BEGIN IMMEDIATE``, or PostgreSQL's
        advisory lock); commits on success."""
        with self._transaction():
            yield Tx(self)
