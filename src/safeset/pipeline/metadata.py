"""A metadata table scanned without fetching: no row has image bytes, so rows go through as Arrow
tables (their URLs hashed, matched and decided column by column), not one object each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..atomic import commit_together
from ..hashing.columns import url_digests
from ..model import Status, printable
from ..sinks import OutLayout, results_table
from ..sinks.clean import clean_writer
from ..sinks.results import observed_table
from ..sources import Shard
from ..sources.base import ShardLog
from .check import decide_table
from .task import ShardTask, auditor_for, summary_of

NOT_FETCHED = "metadata only: images are not fetched (use --fetch)"


def run_columns(
    task: ShardTask, tables: Iterator[pa.Table], log: ShardLog, progress: Callable[[dict], None] | None
) -> dict:
    """A metadata table scanned without fetching: no row has image bytes, so rows go through as
    tables (their URLs hashed, matched and decided column by column), not one object each."""
    started = time.perf_counter()
    layout = OutLayout(task.out)
    checker = auditor_for(task.spec)
    decided = []
    with commit_together() as together:
        writer = clean_writer(task.shard, layout.clean)
        try:
            for rows in tables:
                table, _ = decide_table(
                    _metadata_results(task.shard, rows),
                    checker.matcher,
                    checker.policy,
                    task.spec.settings.pdq_min_quality,
                )
                writer.keep_decided(table)
                decided.append(table)
                if progress is not None:
                    progress({"items": table.num_rows})
            writer.close()
        except BaseException:
            writer.abort()
            raise
        table = pa.concat_tables(decided) if decided else results_table([])
        indexes = table["index"].to_numpy()
        ascending = bool(np.all(indexes[1:] > indexes[:-1]))  # as read: distinct without sorting
        distinct = len(indexes) if ascending else len(np.unique(indexes))
        if table.num_rows != log.rows or distinct != len(indexes):
            raise RuntimeError(
                f"{task.shard.name}: the input holds {log.rows} rows, {table.num_rows} have results, "
                f"{distinct} of them distinct (rows in != out)"
            )
    return summary_of(task, layout, table, log, together, started, fetched=False)


def _metadata_results(shard: Shard, rows: pa.Table) -> pa.Table:
    """The results of metadata rows (see `TableReader.row_tables`), as `hash_item` and
    `_unfetched` record them one by one: no image; the URL's digests."""
    url, error = rows["url"].combine_chunks(), rows["error"].combine_chunks()
    has_url = pc.fill_null(pc.not_equal(url, ""), False)
    held, pytx = url_digests(pc.if_else(has_url, url, pa.scalar(None, pa.string())))
    unreadable = pc.is_valid(error)
    status = pc.if_else(unreadable, str(Status.UNREADABLE_ROW), str(Status.NO_IMAGE))
    why = pc.if_else(has_url, NOT_FETCHED, "no image bytes")
    name = printable(shard.name)
    indexes = rows["index"].combine_chunks()
    return observed_table(
        rows.num_rows,
        {
            "row_id": pc.binary_join_element_wise(name, pc.cast(indexes, pa.string()), ":"),
            "shard": pa.array([name] * rows.num_rows, pa.string()),
            "index": indexes,
            "key": rows["key"],
            "url": url,
            "caption": rows["caption"],
            "signals": rows["signals"],
            "status": status,
            "error": pc.if_else(unreadable, error, why),
            "url_md5": held,
            "url_md5_threatexchange": pytx,
        },
    )
