"""``dicomflow delete --study UID [--series UID [--instance UID]] [--tenant T] [--yes]`` and ``dicomflow undelete``."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from dicomflow.cli.root import settings_of

if TYPE_CHECKING:
    from dicomflow.store import DeleteTarget


def delete(
    ctx: typer.Context,
    study: Annotated[str, typer.Option("--study", help="Study Instance UID to delete (or whose series / instance).")],
    series: Annotated[str | None, typer.Option("--series", help="Only this series of the study.")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="Only this instance of the series.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="The tenant (default: storage.default_tenant).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a study, series or instance from the index in one transaction (objects go with `dicomflow purge`).

    Exit codes: 0 deleted, 1 failed (nothing deleted), 2 bad arguments, 4 nothing of it in the tenant.
    """
    from dicomflow.audit.lifecycle import instances_deleted
    from dicomflow.errors import DicomflowError
    from dicomflow.kafka.producer import Publisher
    from dicomflow.store import PgStore

    settings = settings_of(ctx)
    target = _target(settings.storage.default_tenant, study, series, instance, tenant)
    what = f"{target.level} {instance or series or study} of tenant {target.tenant_id}"
    if not yes and not typer.confirm(f"Delete {what}?", default=False):
        typer.echo("nothing deleted")
        raise typer.Exit(1)
    try:
        with PgStore(settings.database) as store:
            result = store.delete(target, purge_delay_s=settings.lifecycle.purge_delay_s)
    except DicomflowError as exc:
        typer.echo(f"delete failed (nothing deleted): {exc}", err=True)
        raise typer.Exit(1) from exc
    if not result.found:
        typer.echo(f"no {what}", err=True)
        raise typer.Exit(4)
    event = instances_deleted(node_id=settings.worker_node_id, tenant_id=target.tenant_id, study_uid=study,
                              instance_count=len(result.instances), user=getpass.getuser(), user_address=None,
                              resource=_resource(target))
    with Publisher(settings.kafka, settings.topics, client_id="dicomflow-delete") as publisher:
        audited = publisher.send_audit([event], timeout_s=30.0)
    typer.echo(f"deleted {what}: {len(result.instances)} instances"
               + (f", series emptied: {len(result.emptied_series)}" if result.emptied_series else ""))
    if not audited.ok:
        typer.echo("warning: the audit event was not acknowledged by Kafka", err=True)


def undelete(
    ctx: typer.Context,
    study: Annotated[str, typer.Option("--study", help="Study Instance UID to restore (or whose series / instance).")],
    series: Annotated[str | None, typer.Option("--series", help="Only this series of the study.")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="Only this instance of the series.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="The tenant (default: storage.default_tenant).")] = None,
) -> None:
    """Undo deletes whose objects are not purged yet ([lifecycle] purge_delay): the index rows come back as creates.

    The restore is an audit event (DICOM Instances Accessed, action C).
    Exit codes: 0 restored, 1 failed, 2 bad arguments, 4 nothing recoverable.
    """
    from dicomflow.audit.lifecycle import instances_restored
    from dicomflow.errors import DicomflowError
    from dicomflow.kafka.producer import Publisher
    from dicomflow.store import PgStore

    settings = settings_of(ctx)
    target = _target(settings.storage.default_tenant, study, series, instance, tenant)
    try:
        with PgStore(settings.database) as store:
            restored = store.undelete(target)
    except DicomflowError as exc:
        typer.echo(f"undelete failed (nothing restored): {exc}", err=True)
        raise typer.Exit(1) from exc
    what = f"{target.level} {instance or series or study} of tenant {target.tenant_id}"
    if not restored:
        typer.echo(f"nothing of {what} is recoverable (never deleted, or purged already)", err=True)
        raise typer.Exit(4)
    event = instances_restored(node_id=settings.worker_node_id, tenant_id=target.tenant_id, study_uid=study,
                               instance_count=len(restored), user=getpass.getuser(), resource=_resource(target))
    with Publisher(settings.kafka, settings.topics, client_id="dicomflow-undelete") as publisher:
        audited = publisher.send_audit([event], timeout_s=30.0)
    typer.echo(f"restored {what}: {len(restored)} instances")
    if not audited.ok:
        typer.echo("warning: the audit event was not acknowledged by Kafka", err=True)


def _resource(target: DeleteTarget) -> str:
    """The DICOMweb path of what a target names (the audit's resource)."""
    return (f"/studies/{target.study_uid}" + (f"/series/{target.series_uid}" if target.series_uid else "")
            + (f"/instances/{target.sop_uid}" if target.sop_uid else ""))


def _target(default_tenant: str, study: str, series: str | None, instance: str | None,
            tenant: str | None) -> DeleteTarget:
    """The target of the options, every UID checked (a bad one is exit code 2)."""
    from dicomflow.dicom.derived import uid_problem
    from dicomflow.store import DeleteTarget

    if instance is not None and series is None:
        raise typer.BadParameter("--instance needs --series", param_hint="--instance")
    for name, uid in (("--study", study), ("--series", series), ("--instance", instance)):
        if uid is not None and (problem := uid_problem(uid)) is not None:
            raise typer.BadParameter(f"{uid!r} is not a UID: {problem}", param_hint=name)
    return DeleteTarget(tenant or default_tenant, study, series, instance)
