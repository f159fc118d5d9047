"""``switchboard sync ...``: run billing and CRM imports and read their status.

The CLI reads and writes the store directly (like ``switchboard db upgrade``) and hands the
work to a worker of the ``sync`` queue, which reads the file from the same path: run the
worker on the same machine, or mount the exports at the same path in both containers.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from services.core.db import create_db_engine
from services.core.errors import SwitchboardError
from services.core.settings import Settings
from services.profiles.repository import CustomerRepository
from services.sync.app import SyncRuns
from services.sync.repository import FAILED, SUCCEEDED, SyncRun, SyncRunRepository

POLL_SECONDS = 0.5
SHOWN_REJECTIONS = 10


@click.group()
def sync() -> None:
    """Billing and CRM syncs."""


def _syncs(settings: Settings) -> SyncRuns:
    engine = create_db_engine(settings.effective_database_url)
    return SyncRuns(
        SyncRunRepository(engine), CustomerRepository(engine), chunk_rows=settings.sync_chunk_rows
    )


def _enqueue(settings: Settings, run_id: str) -> None:
    from workers.app import create_celery_app
    from workers.tasks.sync import RUN_TASK

    create_celery_app(settings).send_task(RUN_TASK, kwargs={"run_id": run_id})


@sync.command("run")
@click.argument("source")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(path_type=Path),
    help="A connector declaration (TOML or JSON) instead of the built-in one for SOURCE.",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "jsonl"]),
    default=None,
    help="The file's format (default: from its extension).",
)
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Follow the run until it ends."
)
def run_command(
    source: str, file: Path, mapping_file: Path | None, file_format: str | None, wait: bool
) -> None:
    """Import FILE from SOURCE (billing, crm, or a source declared with --mapping)."""
    settings = Settings()
    syncs = _syncs(settings)
    try:
        run = syncs.create(
            source=source, file=file, mapping_file=mapping_file, file_format=file_format or ""
        )
    except SwitchboardError as error:
        raise click.ClickException(error.message) from error
    _enqueue(settings, run.run_id)
    click.echo(f"sync run {run.run_id}: {run.rows_total} rows of {run.file_path} queued")
    if wait:
        _follow(syncs, run)


def _follow(syncs: SyncRuns, run: SyncRun) -> None:
    with click.progressbar(
        length=max(run.rows_total or 0, 1), label=f"{run.source} sync", file=sys.stderr
    ) as bar:
        shown = 0
        while not run.finished:
            time.sleep(POLL_SECONDS)
            run = syncs.runs.get(run.run_id)
            bar.update(run.rows_done - shown)
            shown = run.rows_done
    _print_run(syncs, run)
    if run.status == FAILED:
        sys.exit(1)


def _print_run(syncs: SyncRuns, run: SyncRun) -> None:
    click.echo(
        f"{run.run_id} {run.status}: {run.created_count} created, {run.updated_count} updated, "
        f"{run.unchanged_count} unchanged, {run.rejected_count} rejected "
        f"({run.rows_done} of {run.rows_total if run.rows_total is not None else '?'} rows)"
    )
    if run.error:
        click.echo(f"error: {run.error}")
    found = syncs.runs.rejections(run.run_id, SHOWN_REJECTIONS)
    if found:
        click.echo("rejected rows:")
    for rejection in found:
        key = f" {rejection.key}" if rejection.key else ""
        click.echo(f"  row {rejection.row_number}{key}: {'; '.join(rejection.reasons)}")
    if run.rejected_count > len(found):
        click.echo(f"  ... and {run.rejected_count - len(found)} more")


@sync.command("status")
@click.argument("run_id", required=False)
@click.option("--limit", default=20, show_default=True, help="Runs to list.")
def status_command(run_id: str | None, limit: int) -> None:
    """List recent runs, or show one run with its rejected rows."""
    syncs = _syncs(Settings())
    if run_id:
        try:
            run = syncs.runs.get(run_id)
        except SwitchboardError as error:
            raise click.ClickException(error.message) from error
        click.echo(
            f"source: {run.source}\nfile:   {run.file_path} ({run.file_format}, "
            f"{run.file_size} bytes, sha256 {run.file_sha256[:12]}...)"
        )
        click.echo(
            f"times:  created {_time(run.create_time)}, started {_time(run.start_time)}, "
            f"finished {_time(run.finish_time)}"
        )
        _print_run(syncs, run)
        return
    header = (
        "RUN",
        "SOURCE",
        "STATUS",
        "PROGRESS",
        "CREATED",
        "UPDATED",
        "UNCHANGED",
        "REJECTED",
        "CREATED AT",
        "FINISHED AT",
    )
    lines = [header]
    for run in syncs.runs.recent(limit):
        total = run.rows_total if run.rows_total is not None else "?"
        lines.append(
            (
                run.run_id,
                run.source,
                run.status,
                f"{run.rows_done}/{total}",
                str(run.created_count),
                str(run.updated_count),
                str(run.unchanged_count),
                str(run.rejected_count),
                _time(run.create_time),
                _time(run.finish_time),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


@sync.command("resume")
@click.argument("run_id")
@click.option("--wait/--no-wait", default=True, show_default=True)
def resume_command(run_id: str, wait: bool) -> None:
    """Continue a run a stopped or killed worker left unfinished (or one that failed)."""
    settings = Settings()
    syncs = _syncs(settings)
    try:
        run = syncs.resume(run_id)
    except SwitchboardError as error:
        raise click.ClickException(error.message) from error
    if run.status == SUCCEEDED:
        click.echo(f"sync run {run_id} already succeeded; nothing to resume")
        _print_run(syncs, run)
        return
    _enqueue(settings, run_id)
    click.echo(f"sync run {run_id} resumed from row {run.rows_done + 1}")
    if wait:
        _follow(syncs, run)


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
