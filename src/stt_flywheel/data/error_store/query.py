"""The store's read questions in SQL, run by DuckDB over its Parquet files.

The Arrow path (`resolve`, `latest_kinds`) answers the same questions by joining tables in
Python, which costs memory and time with the whole store; here DuckDB reads only the columns and
partitions a question needs, streams, and spills past `memory_limit`. The rules are the same and
the tests hold the answers equal:

- an event stored twice (two ingests of one file) counts from its first arrival;
- a prediction id stored twice is the first written (files in key order, rows in file order);
- only the requester's own events and a reviewer's label a prediction; the latest of them
  (`event_time`, then arrival, then event id) is applied, the others superseded;
- an event whose prediction is not in the store is pending until `pending_horizon` after it
  arrived, then quarantined;
- a label is `corrected` when the correction differs from the hypothesis after `normalize`
  (`norm` below: the same steps in SQL for ASCII text, `normalize` itself for the rest),
  `flagged` when only marked wrong, `confirmed` otherwise.

Local stores are read in place; a `gs://` store's files are read through its object store into
Arrow (the columns asked for, the partitions asked for) and queried there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from stt_flywheel.data.error_store.layout import STREAMS, Partitions, hour_of
from stt_flywheel.data.identity import ANONYMOUS
from stt_flywheel.errors import StateError
from stt_flywheel.scoring.text import normalize

__all__ = ["MEMORY_LIMIT", "StoreQuery", "errors", "export", "stats", "window"]

MEMORY_LIMIT = "2GB"  # DuckDB spills to disk past this (its temporary directory)
BATCH_ROWS = 50_000  # rows per streamed batch

# `normalize` in SQL for ASCII text (the steps of `normalize_arrow`), Python's for other text
_NORM = r"""
CREATE OR REPLACE MACRO norm(t) AS CASE
  WHEN t IS NULL THEN ''
  WHEN strlen(t) = length(t) THEN trim(regexp_replace(regexp_replace(regexp_replace(regexp_replace(
      ' ' || regexp_replace(replace(lower(t), '-', ' '), '[^a-z0-9'' ]+', ' ', 'g') || ' ',
      ' ''+', ' ', 'g'), '''+ ', ' ', 'g'), ' +', ' ', 'g'), '^ +| +$', '', 'g'))
  ELSE py_normalize(t) END
"""


def _sql_type(t: pa.DataType) -> str:
    """The DuckDB type of an Arrow column type the store's schemas use."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    if pa.types.is_map(t):
        return "MAP(VARCHAR, VARCHAR)"
    if pa.types.is_list(t):
        fields = ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in t.value_type)
        return f"STRUCT({fields})[]"
    return {
        pa.string(): "VARCHAR",
        pa.bool_(): "BOOLEAN",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
    }[t]


class StoreQuery:
    """SQL over one store's files, on a connection of its own (one question at a time: make one
    per question, they cost milliseconds). Each question lists the partitions it needs when
    asked, so it sees the store as it is then."""

    def __init__(
        self, files: Partitions, memory_limit: str = MEMORY_LIMIT, threads: int | None = None
    ) -> None:
        import duckdb

        self.files = files
        self.memory_limit = memory_limit
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET enable_progress_bar = false")  # it would write into an export's stdout
        self.con.execute("SET parquet_metadata_cache = true")  # each file's footer read once a question
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.create_function("py_normalize", normalize, ["VARCHAR"], "VARCHAR", side_effects=False)
        self.con.execute(_NORM)
        self._local = None if files.root.startswith("gs://") else Path(files.root)

    def __enter__(self) -> StoreQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    # -- sources -----------------------------------------------------------------------------

    def _relation(
        self,
        name: str,
        stream: str,
        start: datetime | None,
        end: datetime | None,
        columns: Sequence[str],
    ) -> None:
        """A view `name` over the stream's files whose partition hour is in [start's hour, end),
        with `columns` (a column no file has reads as nulls) and `_file`, `_row`: each row's file
        and place in it, the store's order of writing."""
        schema = STREAMS[stream]
        keys = [k for _, k in self.files.list_files(stream, start, end)]
        wanted = list(dict.fromkeys(columns))
        if not keys:
            nulls = ", ".join(f'NULL::{_sql_type(schema.field(c).type)} AS "{c}"' for c in wanted)
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {nulls}, '' AS _file, 0 AS _row LIMIT 0"
            )
            return
        if self._local is not None:
            paths = "[" + ", ".join(_quote(str(self._local / k)) for k in keys) + "]"
            # DuckDB views take no parameters: the file list goes in as a literal
            source = f"read_parquet({paths}, union_by_name = true, filename = true, file_row_number = true)"
            have = set(self.con.sql(f"SELECT * FROM {source} LIMIT 0").columns)
            place = "filename AS _file, file_row_number AS _row"
        else:
            tables = [
                table.append_column("_file", pa.array([key] * table.num_rows, pa.string())).append_column(
                    "_row", pa.array(range(table.num_rows), pa.int64())
                )
                for key, table in self.files.tables(keys, wanted)
            ]
            arrow = pa.concat_tables(tables, promote_options="default")
            self.con.register(f"{name}_arrow", arrow)
            source, have, place = f"{name}_arrow", set(arrow.column_names), "_file, _row"
        select = ", ".join(
            f'"{c}"' if c in have else f'NULL::{_sql_type(schema.field(c).type)} AS "{c}"' for c in wanted
        )
        view = f"SELECT {select}, {place} FROM {source}"
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {view}")

    def _sources(
        self,
        prediction_columns: Sequence[str],
        start: datetime | None = None,
        end: datetime | None = None,
        upto: datetime | None = None,
        after: datetime | None = None,
        with_events_only: bool = False,
        reviewers: bool = True,
    ) -> None:
        """Views `events` (feedback that arrived in (after, upto], each event once, from its first
        arrival; `events_arrived` with the repeats) and `preds` (the predictions made in
        [start, end), each id once; only those some event names when `with_events_only`, which
        spares reading the rest of their columns)."""
        events_end = hour_of(upto) + timedelta(hours=1) if upto is not None else None
        self._relation("events_all", "feedback", after, events_end, STREAMS["feedback"].names)
        arrival = [f"ingested_at > {_literal(after)}"] if after is not None else []
        arrival += [f"ingested_at <= {_literal(upto)}"] if upto is not None else []
        arrival += [] if reviewers else ["NOT coalesce(reviewer, false)"]
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW events_arrived AS SELECT * FROM events_all {_where(arrival)}"
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW events AS SELECT * EXCLUDE (_file, _row) FROM events_arrived "
            "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ingested_at, _file, _row) = 1"
        )
        self._relation(
            "preds_all", "predictions", start, end, ["prediction_id", "predicted_at", *prediction_columns]
        )
        window = [f"predicted_at >= {_literal(start)}"] if start is not None else []
        window += [f"predicted_at < {_literal(end)}"] if end is not None else []
        if with_events_only:
            window.append("prediction_id IN (SELECT prediction_id FROM events_arrived)")
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW preds AS SELECT * EXCLUDE (_file, _row) FROM preds_all {_where(window)} "
            "QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY _file, _row) = 1"
        )

    # -- questions ---------------------------------------------------------------------------

    _JUDGED = f"""
        judged AS (
          SELECT e.*, p.prediction_id IS NOT NULL AS visible, p.hypothesis,
                 coalesce(e.reviewer, false)
                   OR coalesce(e."user", '{ANONYMOUS}') = coalesce(p."user", '{ANONYMOUS}') AS allowed
          FROM events e LEFT JOIN preds p USING (prediction_id)
        ),
        ranked AS (
          SELECT *, CASE WHEN visible AND allowed THEN row_number() OVER (
                   PARTITION BY prediction_id, visible AND allowed
                   ORDER BY event_time DESC, ingested_at DESC, event_id DESC) END AS place
          FROM judged
        )"""

    _KIND = """CASE WHEN corrected_text IS NOT NULL AND norm(corrected_text) <> norm(hypothesis)
                    THEN 'corrected' WHEN flagged THEN 'flagged' ELSE 'confirmed' END"""

    def stats(self, pending_horizon: timedelta, now: datetime, since: datetime | None) -> dict[str, Any]:
        """What `export.stats` counts: one pass over the predictions' ids and users, one over
        the feedback, and the join of the feedback to the predictions it names."""
        self._sources(["user", "hypothesis"], upto=now, with_events_only=True)
        horizon = _literal(now - pending_horizon)
        anonymous = _quote(ANONYMOUS)
        totals = self.con.execute(
            f"""SELECT count(*), count(DISTINCT owner) FROM (
                  SELECT min_by(coalesce("user", {anonymous}), (_file, _row)) AS owner
                  FROM preds_all GROUP BY prediction_id)"""
        ).fetchone()
        arrivals = self.con.execute(
            f"""SELECT count(*), count(DISTINCT event_id),
                       count(DISTINCT event_id) FILTER (WHERE {f"ingested_at > {_literal(since)}" if since else "true"})
                FROM events_arrived"""
        ).fetchone()
        states = self.con.execute(
            f"""
            WITH {self._JUDGED.strip()}
            SELECT
              count(*) FILTER (WHERE place = 1),
              count(*) FILTER (WHERE place > 1),
              count(*) FILTER (WHERE NOT visible AND ingested_at >= {horizon}),
              count(*) FILTER (WHERE (visible AND NOT allowed) OR (NOT visible AND ingested_at < {horizon})),
              count(*) FILTER (WHERE place = 1 AND {self._KIND} = 'corrected'),
              count(*) FILTER (WHERE place = 1 AND {self._KIND} = 'flagged'),
              count(*) FILTER (WHERE place = 1 AND {self._KIND} = 'confirmed')
            FROM ranked
            """
        ).fetchone()
        assert totals is not None and arrivals is not None and states is not None
        read, distinct, since_watermark = arrivals
        names = ["applied", "superseded", "pending", "quarantined", "corrected", "flagged", "confirmed"]
        return {
            "predictions": int(totals[0]),
            "users": int(totals[1]),
            "read": int(read),
            "duplicate": int(read - distinct),
            **{k: int(v or 0) for k, v in zip(names, states, strict=True)},
            "since_watermark": int(since_watermark),
        }

    def labelled(
        self,
        *,
        prediction_columns: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        upto: datetime | None = None,
        after: datetime | None = None,
        kinds: Sequence[str] | None = None,
        version: str | None = None,
        order: str = "prediction_id",
        unlabelled: bool = False,
        reviewers: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """The predictions made in [start, end) with their applied event among those that arrived
        in (after, upto] (its columns prefixed `event_`), their `kind` and `events` (how many
        arrived, repeats included); only those with a label of `kinds` when given, and with no
        label too when `unlabelled`; without `reviewers`, as if reviewers had sent nothing. Streamed
        in batches, ordered by `order`."""
        columns = list(dict.fromkeys(["user", "hypothesis", "model_version", *prediction_columns]))
        event_cols = [c for c in STREAMS["feedback"].names if c != "prediction_id"]
        try:
            only_labelled = kinds is not None and not unlabelled
            self._sources(
                columns,
                start=start,
                end=end,
                upto=upto,
                after=after,
                with_events_only=only_labelled,
                reviewers=reviewers,
            )
            filters = []
            if kinds is not None:
                wanted = ", ".join(_quote(k) for k in kinds)
                filters.append(f"(kind IN ({wanted})" + (" OR kind IS NULL)" if unlabelled else ")"))
            if version is not None:
                filters.append(f"model_version = {_quote(version)}")
            where = _where(filters)
            event_select = ", ".join(f'a."{c}" AS "event_{c}"' for c in event_cols)
            result = self.con.sql(
                f"""
                WITH {self._JUDGED.strip()},
                applied AS (SELECT * FROM ranked WHERE place = 1),
                copies AS (SELECT prediction_id, count(*) AS events FROM events_arrived GROUP BY prediction_id),
                joined AS (
                  SELECT p.*, {event_select},
                         CASE WHEN a.event_id IS NULL THEN NULL ELSE {self._KIND.replace("hypothesis", "p.hypothesis")} END AS kind,
                         coalesce(c.events, 0) AS events
                  FROM preds p LEFT JOIN applied a USING (prediction_id) LEFT JOIN copies c USING (prediction_id)
                )
                SELECT * FROM joined {where} ORDER BY {order}
                """
            )
            yield from _within_memory(lambda: result.to_arrow_reader(BATCH_ROWS), self.memory_limit)
        finally:
            self.con.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _within_memory(reader: Any, memory_limit: str) -> Iterator[pa.RecordBatch]:
    """The batches of `reader()`; DuckDB running out of its memory is a clear error that says
    which setting to raise, not a traceback."""
    import duckdb

    try:
        yield from reader()
    except duckdb.OutOfMemoryException as exc:
        raise StateError(
            f"the error store's query needed more than store.memory_limit ({memory_limit}) that DuckDB "
            f"could not spill to disk; raise store.memory_limit ({str(exc).splitlines()[0]})"
        ) from exc


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _literal(t: datetime) -> str:
    return f"TIMESTAMPTZ {_quote(t.isoformat())}"


# -- the store's reads, answered in SQL (`ErrorStore` calls these for the `duckdb` engine) ---------

_EVENT_PREFIX = "event_"


def _split(batch: pa.RecordBatch) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, str | None, int]]:
    """Each row of a `labelled` batch as (prediction, its applied event or None, kind, events)."""
    for row in batch.to_pylist():
        event = {k[len(_EVENT_PREFIX) :]: row.pop(k) for k in list(row) if k.startswith(_EVENT_PREFIX)}
        kind, count = row.pop("kind"), row.pop("events")
        event["prediction_id"] = row["prediction_id"]
        yield row, (event if kind is not None else None), kind, count


def stats(
    files: Partitions,
    pending_horizon: timedelta,
    since: datetime | None = None,
    now: datetime | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> dict[str, Any]:
    """`export.stats`, counted by DuckDB."""
    from collections import Counter

    from stt_flywheel.data.error_store.layout import utc_now

    now = now or utc_now()
    with StoreQuery(files, memory_limit) as query:
        c = query.stats(pending_horizon, now, since)
    rejected = Counter(q["stream"] for q in files.quarantine())
    states = ("applied", "superseded", "duplicate", "pending", "quarantined")
    return {
        "predictions": c["predictions"],
        "users": c["users"],
        "feedback_events": {
            "read": c["read"] + rejected.get("feedback", 0),
            **{state: c[state] for state in states},
            "rejected_at_ingest": rejected.get("feedback", 0),
        },
        "labels": {k: c[k] for k in ("corrected", "flagged", "confirmed")},
        "records_rejected_at_ingest": rejected.get("records", 0),
        "since_watermark": {"watermark": since, "feedback_events": c["since_watermark"]},
    }


def errors(
    files: Partitions, upto: datetime | None = None, memory_limit: str = MEMORY_LIMIT
) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    """`export.errors`, joined by DuckDB and streamed."""
    columns = [c for c in STREAMS["predictions"].names if c not in ("prediction_id", "predicted_at")]
    query = StoreQuery(files, memory_limit)
    for batch in query.labelled(prediction_columns=columns, upto=upto, kinds=("corrected", "flagged")):
        for prediction, event, kind, _ in _split(batch):
            assert event is not None and kind is not None
            yield prediction, event, kind


_FEEDBACK_FIELDS = ("corrected_text", "flagged", "event_time", "source", "ingested_at")


def export(
    files: Partitions,
    *,
    since: datetime | None = None,
    version: str | None = None,
    now: datetime | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> Iterator[dict[str, Any]]:
    """`export.export`, joined by DuckDB and streamed: only the partitions from `since` on are
    read, and the feedback that arrived after the earliest of them (less the clock skew)."""
    from stt_flywheel.data.error_store.layout import utc_now
    from stt_flywheel.data.error_store.resolve import CLOCK_SKEW

    now = now or utc_now()
    columns = [c for c in STREAMS["predictions"].names if c not in ("prediction_id", "predicted_at")]
    query = StoreQuery(files, memory_limit)
    batches = query.labelled(
        prediction_columns=columns,
        start=since,
        upto=now,
        after=since - CLOCK_SKEW if since is not None else None,
        version=version,
        order="predicted_at, prediction_id",
    )
    for batch in batches:
        for row, event, kind, count in _split(batch):
            row["metadata"] = dict(row["metadata"] or [])
            row["feedback"] = {k: event[k] for k in _FEEDBACK_FIELDS} if event is not None else None
            row["label"] = kind
            row["feedback_events"] = count
            yield row


def window(
    files: Partitions,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    after: datetime | None,
    columns: Sequence[str],
    reviewers: bool,
    memory_limit: str = MEMORY_LIMIT,
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, str | None]]:
    """`ErrorStore.window`, joined by DuckDB and streamed in the order of `predicted_at`."""
    batches = StoreQuery(files, memory_limit).labelled(
        prediction_columns=columns,
        start=start,
        end=end,
        upto=now,
        after=after,
        reviewers=reviewers,
        order="predicted_at, prediction_id",
    )
    for batch in batches:
        for prediction, event, kind, _ in _split(batch):
            yield prediction, event, kind
