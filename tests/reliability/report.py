"""Render ``RELIABILITY.md`` from the figures the reliability tests left in ``build/reliability``.

Run ``NAVRO_WRITE_REPORT=1 python -m pytest tests/reliability`` (the session writes the report
at its end), or ``python -m tests.reliability.report`` to re-render from the stored figures.
"""

from __future__ import annotations

import datetime
import platform
import sys
from typing import Any, Dict, List

from .helpers import REPORT_PATH, read_results


def _table(headers: List[str], rows: List[List[Any]]) -> List[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _matrix(data: Dict[str, Any]) -> List[str]:
    rows = data["rows"]
    drivers = data["drivers"]
    policy = data["policy"]
    out = [
        "## Fault matrix",
        "",
        f"**{data['cells']} cells** ({len(data['faults'])} faults x {len(drivers)} adapter "
        f"flavours), **{data['passed']} passed**, {data['callers_per_cell']} concurrent callers "
        "per cell. Retry policy for the matrix: "
        f"max_attempts={policy['max_attempts']}, attempt_timeout={policy['attempt_timeout']} s, "
        f"deadline={policy['deadline']} s, backoff {policy['backoff_base']}..."
        f"{policy['backoff_max']} s.",
        "",
        "Each cell checks the outcome of every caller, that none was lost (a response or a "
        "typed `NavroAuthError`, never a library exception), that no caller waited past the "
        "deadline (+0.5 s provider grace, +2 s scheduling slack), the retry budget "
        "(token requests <= max_attempts x acquisitions, exact counts where deterministic), and "
        "that no secret or token reached our logs, the errors' messages/reprs, or the reprs of "
        "the adapter, client, provider, credentials and token.",
        "",
    ]
    by_fault: Dict[str, List[Dict[str, Any]]] = {}
    for row in rows:
        by_fault.setdefault(row["fault"], []).append(row)
    descriptions = data.get("descriptions", {})
    table_rows = []
    order = list(descriptions) or sorted(by_fault)
    for fault in order:
        cells = by_fault.get(fault)
        if not cells:
            continue
        where, description = descriptions.get(fault, ["?", ""])
        passed = sum(1 for c in cells if c["passed"])
        requests = sorted({c.get("server_token_requests", c["token_requests"]) for c in cells})
        slowest = max(c["elapsed"] for c in cells)
        expected = cells[0]["expected"]
        table_rows.append(
            [
                f"`{fault}`",
                where,
                description,
                expected.replace("|", " or "),
                "/".join(str(r) for r in requests),
                f"{slowest:.2f}",
                f"{passed}/{len(cells)}",
            ]
        )
    out += _table(
        [
            "fault",
            "at",
            "what",
            "every caller got",
            "token requests",
            "slowest cell (s)",
            "passed",
        ],
        table_rows,
    )
    failed = [r for r in rows if not r["passed"]]
    out += ["", f"Failed cells: {len(failed)}."]
    for row in failed:
        out.append(f"- `{row['fault']}` on {row['driver']}: {'; '.join(row['problems'])}")
    third = [r for r in rows if r.get("third_party_log_leaks")]
    out.append(
        f"Cells where a third-party logger printed a secret or token at DEBUG: {len(third)}."
    )
    return out


def _soak(title: str, data: Dict[str, Any]) -> List[str]:
    rows = []
    total = 0
    for name in sorted(data):
        f = data[name]
        total += f["requests"]
        rows.append(
            [
                name,
                f"{f['requests']:,}",
                f["errors"],
                f["seconds"],
                f["requests_per_second"],
                f["token_rotations"],
                f["api_401s_absorbed"],
                f["object_growth"],
                f["rss_growth_mib"],
                f"{f['fds_before']} -> {f['fds_after_close']}",
            ]
        )
    out = [f"### {title}: {total:,} requests", ""]
    out += _table(
        [
            "adapter",
            "requests",
            "errors",
            "seconds",
            "req/s",
            "token fetches",
            "401s absorbed",
            "objects +",
            "RSS + MiB",
            "fds",
        ],
        rows,
    )
    return out


def render() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Reliability and security report",
        "",
        f"Generated {now} by `tests/reliability` on Python {platform.python_version()} "
        f"({sys.platform}). Figures are from the last run of each section; rerun with:",
        "",
        "```",
        "NAVRO_WRITE_REPORT=1 python -m pytest tests/reliability            # default suite",
        "NAVRO_WRITE_REPORT=1 python -m pytest tests/reliability --soak -k long_soak",
        "python -m tests.reliability.report                                 # re-render only",
        "```",
        "",
    ]
    matrix = read_results("fault_matrix")
    out += _matrix(matrix) if matrix else ["## Fault matrix", "", "(not run)"]
    out += ["", "## Soak", ""]
    for kind, title in (("short", "Short soak (default suite)"), ("long", "Long soak (--soak)")):
        data = read_results(f"soak_{kind}")
        out += _soak(title, data) if data else [f"### {title}", "", "(not run)"]
        out.append("")
    out += [
        "Token TTL 2 s in the soak sandbox (a child process); errors = requests that did not end "
        "in 200. `401s absorbed`: requests whose token expired on the wire and were resent "
        "transparently. Objects/RSS are measured after a warm-up; fds before opening and after "
        "closing the client.",
        "",
        "## Concurrency and lifecycle",
        "",
    ]
    life = read_results("lifecycle") or {}
    storm = life.get("cancellation_storm")
    if storm:
        for name in ("core", "aiohttp"):
            s = storm.get(name)
            if s:
                out.append(
                    f"- Cancellation storm ({name}), `-X dev -W error`: {s['tasks']} tasks, "
                    f"{s['cancelled']} cancelled, {s['completed']} completed with one result, "
                    f"{s['token_requests']} token request, {s['pending_tasks']} tasks left "
                    f"pending, asyncio log records: {len(storm.get('asyncio_log', []))}."
                )
    fork = life.get("fork")
    if fork:
        out.append(
            f"- Fork with a fetch in flight: the child fetched its own token in "
            f"{fork['child_fetch_seconds']} s ({fork['token_requests']} token requests in all)."
        )
    out.append(
        "- Many event loops (6 threads x 40 tasks) sharing one provider, one httpx `NavroAuth` "
        "and one aiohttp middleware: one token request each, no cross-loop error."
    )
    out.append(
        "- Stateful hypothesis machine (threads + tasks, fake clock, invalidations, transport "
        "failures, cancellations): no expired token, at most one fetch in flight, no waiter left."
    )
    security = read_results("security") or {}
    out += ["", "## Security", ""]
    out.append(
        f"- Secret/token found in a `navro_adapters` log record: "
        f"{security.get('our_log_leaks', 0)} (every adapter, DEBUG, success, refresh, 401, "
        "redirect and rejected-secret paths; plus every matrix cell)."
    )
    third = security.get("third_party_logs", {})
    if third:
        leaking = {k: v["records_with_secret_or_token"] for k, v in third.items()}
        loggers = sorted({lg for v in third.values() for lg in v["records"]} - {"navro_adapters"})
        out.append(
            f"- Third-party DEBUG loggers seen ({', '.join(loggers)}): records containing a "
            f"secret or token: {sum(sum(v.values()) for v in leaking.values())}. urllib3 logs "
            "URLs and status lines, httpx/httpx2 INFO logs the request line, httpcore/httpcore2 "
            "log trace events with response headers only; none logs request headers or bodies."
        )
    modes = security.get("file_store_modes")
    if modes:
        out.append(f"- FileStore files under umask 0: {modes}.")
    fuzz = security.get("fuzz", {})
    if fuzz:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(fuzz.items()))
        out.append(f"- Fuzzing (hypothesis): {shown}. No 5xx (except 505) and no handler crash.")
    out += [
        "- Plain `http://` to non-loopback hosts refused for `base_url` and `token_url`; tokens "
        "never sent to another origin (redirects, absolute URLs, `localhost` alias of the API "
        "host) on every adapter; CLI `token --json` prints the token once and never the secret.",
        "",
    ]
    return "\n".join(out)


def write_report() -> None:
    REPORT_PATH.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    write_report()
    print(f"wrote {REPORT_PATH}")
