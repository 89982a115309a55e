"""great-expectations in a process of its own, for `raw_quality.ExpectationSummary`.

Importing great-expectations costs ~2.5 CPU-s, nearly all of it holding the GIL. Before the ingest it was
serial time (a quarter of a 10M-record day's wall clock); in a thread beside the ingest's three streaming
stages it starved them of the GIL (the day streamed in 16 s instead of 7). In a process of its own it runs on
the second core while the day streams, and contends for nothing but CPU: `ExpectationSummary` starts it when it
is created (if the process has none yet), and sends it the per-column value summaries once the day has
streamed.

The worker imports great-expectations, builds the suite from its plain-data entries, makes an ephemeral
context and runs each expectation once on a one-row frame (great-expectations' first validation costs
~0.3 s of one-off set-up; that result is discarded), then answers requests: one process serves every
summary of its parent (a backfill's days, a test session), as the in-process import did.

Protocol: argv[1] is the suite as JSON, `[[expectation type, kwargs], ...]`; then requests on stdin and replies
on stdout, each a pickle preceded by its length (8 bytes, little-endian). A request is `{"frames": {column or
None (the table): pandas.DataFrame}}`; its reply `{"version": str, "suite": [(type, kwargs as
great-expectations stored them)], "results": [(success, unexpected_index_list) or None (no frame for its
column), one per expectation]}`, or `{"error": traceback}`, after which the worker exits. End of input (the
parent closed the pipe, or died): the worker exits quietly. It arms `PR_SET_PDEATHSIG` from `PARENT_PID_ENV`,
so it dies with the thread that started it. Anything printed while it runs goes to stderr, never into a reply.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from typing import Any

from phoenix_assets.lib.process_lifetime import die_with_parent_from_env

Entries = list[tuple[str, dict[str, Any]]]


def build_suite(entries: Entries) -> list[Any]:
    """great-expectations objects for `entries` (expectation type, kwargs); imports great-expectations."""
    import great_expectations as gx  # ~2.5 s import

    suite = []
    for kind, kwargs in entries:
        exp = getattr(gx.expectations, "".join(w.capitalize() for w in kind.split("_")))(**kwargs)
        if exp.expectation_type != kind:
            raise ValueError(f"raw_mbp10 expectations: {kind} built {exp.expectation_type}")
        suite.append(exp)
    return suite


class Engine:
    """The suite, and an ephemeral context's pandas batch definition to validate frames with."""

    def __init__(self, entries: Entries) -> None:
        import great_expectations as gx
        import pandas as pd
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.version = gx.__version__
        self.suite = build_suite(entries)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.batch_def = (
            context.data_sources.add_pandas("raw_mbp10")
            .add_dataframe_asset("summary")
            .add_batch_definition_whole_dataframe("batch")
        )
        warm: dict[str | None, Any] = {None: pd.DataFrame({"x": [0]})}
        for exp in self.suite:
            column = exp.configuration.kwargs.get("column")
            if column is not None:
                warm[column] = pd.DataFrame({column: [0]})
        self.results(warm)  # the one-off set-up of each kind of expectation, off the ingest's critical path

    def results(self, frames: dict[str | None, Any]) -> list[tuple[bool, list[int]] | None]:
        out: list[tuple[bool, list[int]] | None] = []
        for exp in self.suite:
            frame = frames.get(exp.configuration.kwargs.get("column"))
            if frame is None:
                out.append(None)
                continue
            batch = self.batch_def.get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(exp, result_format={"result_format": "COMPLETE"})
            out.append((bool(result.success), [int(i) for i in result.result.get("unexpected_index_list") or []]))
        return out

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": self.version,
            "suite": [(exp.expectation_type, dict(exp.configuration.kwargs)) for exp in self.suite],
            "results": self.results(request["frames"]),
        }


def _read(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None  # end of input: the parent closed our stdin, or died
    return data


def main() -> int:
    die_with_parent_from_env()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library's print goes to stderr, not into a reply
    requests = sys.stdin.buffer
    try:
        engine: Engine | None = Engine([(kind, kwargs) for kind, kwargs in json.loads(sys.argv[1])])
        failure = ""
    except BaseException:
        engine, failure = None, traceback.format_exc()
    while (header := _read(requests, 8)) is not None:
        data = _read(requests, int.from_bytes(header, "little"))
        if data is None:
            return 0
        try:
            reply = engine.reply(pickle.loads(data)) if engine is not None else {"error": failure}
        except BaseException:
            reply = {"error": traceback.format_exc()}
        payload = pickle.dumps(reply)
        replies.write(len(payload).to_bytes(8, "little") + payload)
        replies.flush()
        if "error" in reply:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
