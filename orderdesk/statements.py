"""The hot path's INSERTs, single-row reads and compare-and-set UPDATEs, built once per shape
instead of per call.

Django compiles every statement anew: on this project's machine (2026-12-02, SQLite, in
process) reading one Strategy by name cost 300 us through the ORM against 14 us for its SQL,
of which 170 us was compiling its 21 columns; inserting one Alert cost 210 us through
`objects.create()` and 290 us through `bulk_create()`. An order makes about a dozen such
statements between its alert and its fill, most of them inside a write transaction (on
SQLite, under the one write lock). Here the SQL is derived once from the model's own fields
and reused; values pass through the same field methods the ORM uses (`pre_save`,
`get_db_prep_save`, `get_db_prep_value`, the back end's and the fields' converters), so
columns, defaults and types stay the ORM's, and a migration needs no change here. The
statements go through Django's cursor: its error translation (IntegrityError), its query
log and its execute wrappers.

Only what the hot path needs: fresh objects with an auto primary key and no signals (as
`bulk_create`, which sends none either), reads of whole rows by equality (with one related
row), and UPDATEs of plain values where plain equalities hold (and, written in SQL once, a
further `Condition`).
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from django.db import connections, router
from django.db.models import BooleanField, Model, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.sql import UpdateQuery


@dataclass(frozen=True)
class Condition:
    """A WHERE condition written in SQL, with its parameters, for an UPDATE the hot path makes
    on every call with a condition beyond plain equalities. The ORM compiles its `Exists`
    anew each time: the claim's kill-switch check was a quarter of a queue worker's Python
    (py-spy under benchmarks/flow.py on PostgreSQL, 2026-12-02)."""

    sql: str
    params: tuple = ()

    def __invert__(self) -> "Condition":
        return Condition(f"NOT ({self.sql})", self.params)

    def expression(self) -> RawSQL:
        """The same condition for a queryset's filter()."""
        return RawSQL(self.sql, self.params, output_field=BooleanField())


def _quote(model: type[Model]):
    return connections[router.db_for_write(model)].ops.quote_name


def _field(model: type[Model], name: str):
    return model._meta.pk if name == "pk" else model._meta.get_field(name)


@lru_cache(maxsize=256)  # one per model and number of rows
def _insert_shape(model: type[Model], vendor: str, rows: int) -> tuple[str, tuple]:
    opts, quote = model._meta, _quote(model)
    fields = tuple(f for f in opts.local_concrete_fields if not f.primary_key)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"VALUES {', '.join([one] * rows)} RETURNING {quote(opts.pk.column)}")
    return sql, fields


def _insert_values(obj: Model, fields, connection) -> list:
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


class PreparedInsert:
    """INSERTs of fresh objects of one model whose values are already converted (`insert`): for
    a transaction that should hold its lock only while they run (on SQLite the one write lock).
    `run()` gives each object its primary key, as `bulk_create` does (no signals, no `save()`),
    in one statement per batch the back end's parameter limit allows."""

    def __init__(self, *objs: Model):
        self.objs, self.batches = objs, []
        if not objs:
            return
        model = type(objs[0])
        self.using = router.db_for_write(model)
        connection = connections[self.using]
        batch = connection.ops.bulk_batch_size(_insert_shape(model, connection.vendor, 1)[1], objs)
        for start in range(0, len(objs), batch):
            chunk = objs[start:start + batch]
            sql, fields = _insert_shape(model, connection.vendor, len(chunk))
            self.batches.append((sql, [value for obj in chunk for value in _insert_values(obj, fields, connection)],
                                 chunk))

    def run(self) -> None:
        for sql, params, chunk in self.batches:
            with connections[self.using].cursor() as cursor:
                cursor.execute(sql, params)
                # One statement's rows are numbered in the order of its VALUES on both back ends.
                keys = sorted(row[0] for row in cursor.fetchall())
            for obj, key in zip(chunk, keys, strict=True):
                obj.pk = key
                obj._state.adding, obj._state.db = False, self.using


def insert(*objs: Model) -> None:
    """INSERT fresh objects of one model (see PreparedInsert) and give each its primary key."""
    PreparedInsert(*objs).run()


def _where(model: type[Model], names: tuple[str, ...], nulls: tuple[bool, ...], table: str) -> tuple[str, tuple]:
    quote = _quote(model)
    lookups = tuple(_field(model, name) for name in names)
    terms = [f"{table}.{quote(f.column)} {'IS NULL' if null else '= %s'}" for f, null in zip(lookups, nulls, strict=True)]
    return " AND ".join(terms) or "1 = 1", tuple(f for f, null in zip(lookups, nulls, strict=True) if not null)


def _params(fields, equals: dict, connection) -> list:
    values = [v for v in equals.values() if v is not None]  # None: IS NULL, no parameter
    return [f.get_db_prep_value(v, connection, prepared=False) for f, v in zip(fields, values, strict=True)]


def _columns(model: type[Model], table: str, connection) -> tuple[list[str], tuple, tuple]:
    """The model's columns as selected from `table`, their attribute names, and for each its
    converters (the back end's, then the field's), as the ORM's compiler gathers them."""
    quote = connection.ops.quote_name
    fields = tuple(model._meta.concrete_fields)
    converters = []
    for f in fields:
        col = f.get_col(model._meta.db_table)
        converters.append((col, tuple(connection.ops.get_db_converters(col)) + tuple(col.get_db_converters(connection))))
    return [f"{table}.{quote(f.column)}" for f in fields], tuple(f.attname for f in fields), tuple(converters)


@lru_cache(maxsize=256)
def _select_shape(model: type[Model], vendor: str, names: tuple[str, ...], nulls: tuple[bool, ...],
                  related: str | None, lock: bool):
    connection = connections[router.db_for_read(model)]
    quote = connection.ops.quote_name
    columns, attnames, converters = _columns(model, "t", connection)
    sql_from = f"{quote(model._meta.db_table)} t"
    joined = None
    if related:
        fk = model._meta.get_field(related)
        other = fk.related_model
        more, other_attnames, other_converters = _columns(other, "r", connection)
        columns += more
        sql_from += (f" INNER JOIN {quote(other._meta.db_table)} r"
                     f" ON r.{quote(fk.target_field.column)} = t.{quote(fk.column)}")
        joined = (fk, other, other_attnames, len(attnames))
        converters += other_converters
    where, lookups = _where(model, names, nulls, "t")
    # SQLite has no FOR UPDATE (and needs none: its writers take the database in turn).
    locking = " FOR UPDATE OF t" if lock and connection.features.has_select_for_update else ""
    sql = f"SELECT {', '.join(columns)} FROM {sql_from} WHERE {where} LIMIT 1{locking}"
    return sql, attnames, converters, lookups, joined


def first(model: type[Model], *, related: str | None = None, lock: bool = False, **equals) -> Model | None:
    """The row whose fields equal `equals` (None: IS NULL; the first one, in no particular
    order), as the model instance `model.objects.filter(**equals).first()` would give, or
    None. `related`: a foreign key whose row comes with it (`select_related`); `lock`:
    `select_for_update()`."""
    using = router.db_for_read(model)
    connection = connections[using]
    nulls = tuple(v is None for v in equals.values())
    sql, attnames, converters, lookups, joined = _select_shape(model, connection.vendor, tuple(equals), nulls,
                                                               related, lock)
    with connection.cursor() as cursor:
        cursor.execute(sql, _params(lookups, equals, connection))
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (col, column_converters) in zip(row, converters, strict=True):
        for convert in column_converters:
            value = convert(value, col, connection)
        values.append(value)
    if joined is None:
        return model.from_db(using, attnames, values)
    fk, other, other_attnames, split = joined
    obj = model.from_db(using, attnames, values[:split])
    fk.set_cached_value(obj, other.from_db(using, other_attnames, values[split:]))
    return obj


@lru_cache(maxsize=256)
def _update_shape(model: type[Model], vendor: str, names: tuple[str, ...], where: tuple[str, ...],
                  nulls: tuple[bool, ...], condition: str | None) -> tuple[str, tuple, tuple]:
    opts, quote = model._meta, _quote(model)
    fields = tuple(_field(model, name) for name in names)
    equalities, lookups = _where(model, where, nulls, quote(opts.db_table))
    sql = (f"UPDATE {quote(opts.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in fields)} "
           f"WHERE {equalities}" + (f" AND ({condition})" if condition else ""))
    return sql, fields, lookups


def update_sql(model: type[Model], values: dict, condition: Condition | None = None, **equals) -> tuple[str, list]:
    """The SQL and parameters of `model.objects.filter(**equals).update(**values)` for plain
    values and plain equalities (None: IS NULL), and `condition` if given."""
    connection = connections[router.db_for_write(model)]
    nulls = tuple(v is None for v in equals.values())
    sql, fields, lookups = _update_shape(model, connection.vendor, tuple(values), tuple(equals), nulls,
                                         condition.sql if condition else None)
    params = [f.get_db_prep_save(v, connection) for f, v in zip(fields, values.values(), strict=True)]
    return sql, params + _params(lookups, equals, connection) + list(condition.params if condition else ())


def queryset_update_sql(queryset: QuerySet, values: dict) -> tuple[str, list]:
    """The ORM's own `queryset.update(**values)`, compiled and not run: for conditions beyond
    plain equalities (an `Exists`, a `__startswith`)."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    return sql, list(params)


def run_update(update: tuple[str, list], using: str = "default") -> int:
    """Run an UPDATE from update_sql or queryset_update_sql: the number of rows changed."""
    with connections[using].cursor() as cursor:
        cursor.execute(*update)
        return cursor.rowcount


def update(model: type[Model], values: dict, condition: Condition | None = None, **equals) -> int:
    """`model.objects.filter(**equals).update(**values)` (see update_sql): the number of rows
    changed."""
    return run_update(update_sql(model, values, condition, **equals), router.db_for_write(model))


@lru_cache(maxsize=64)
def _insert_select_shape(model: type[Model], vendor: str) -> tuple[str, tuple]:
    """INSERT … SELECT <each value cast to its column's type>: a bare parameter in a select
    list would be typed text (a NULL for an integer column then fails). A varchar is cast
    without its length, which would cut an overlong value where the column refuses it."""
    insert, fields = _insert_shape(model, vendor, 1)
    connection = connections[router.db_for_write(model)]
    casts = [re.sub(r"^varchar\(\d+\)$", "varchar", f.cast_db_type(connection)) for f in fields]
    return insert.split(" VALUES ", 1)[0] + " SELECT " + ", ".join(f"%s::{cast}" for cast in casts), fields


def insert_if_updated(update: tuple[str, list], obj: Model) -> bool:
    """PostgreSQL only: run the UPDATE `update` (from update_sql or queryset_update_sql) and,
    if it changed a row, INSERT the fresh `obj`, in one statement (a data-modifying WITH):
    one round trip instead of BEGIN, UPDATE, INSERT and COMMIT, and atomic by itself. True
    (and `obj` has its key) when the update changed a row and `obj` was inserted."""
    model = type(obj)
    using = router.db_for_write(model)
    connection = connections[using]
    into, fields = _insert_select_shape(model, connection.vendor)
    update_sql_, update_params = update
    sql = (f"WITH changed AS ({update_sql_} RETURNING 1) {into} FROM changed LIMIT 1 "
           f"RETURNING {_quote(model)(model._meta.pk.column)}")
    params = update_params + _insert_values(obj, fields, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding, obj._state.db = False, using
    return True
