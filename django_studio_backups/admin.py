"""The admin's Backups page: list, create, verify, download, delete and restore backups.

Every view only calls ``services``; the name in a URL is accepted only when the service lists
a backup of that name, which rules out paths into the rest of the file system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import update_wrapper
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connections, transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.text import capfirst
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from . import services
from .admin_listing import Row, offsite_status, page_warnings, replication_summary, window_text
from .admin_moment import SHOWN_FORMAT, MomentForm, not_fetched, older_than_chosen, refused
from .admin_texts import (
    cause,
    change_text,
    explained,
    replication_settings_wrong,
    with_detail,
)
from .exceptions import BackupFailed, BackupNotFound, DeleteFailed, RestoreFailed
from .models import Backup
from .services import BackupFile
from .size_chart import size_chart

if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin[Backup]
else:
    ModelAdmin = admin.ModelAdmin

logger = logging.getLogger("django_studio_backups")

View = Callable[..., HttpResponseBase]


def not_atomic(view: View) -> View:
    # Under ATOMIC_REQUESTS the request's own transaction would hold the database that a
    # restore must replace; the restore runs outside it and the service refuses otherwise.
    for alias in connections:
        view = transaction.non_atomic_requests(using=alias)(view)
    return view


@admin.register(Backup)
class BackupAdmin(ModelAdmin):
    def has_change_permission(self, request: HttpRequest, obj: Backup | None = None) -> bool:
        # A backup is never edited; the add, delete, restore and download permissions
        # cover everything that can be done to one.
        return False

    def has_restore_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.restore_backup")

    def has_download_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.download_backup")

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: View) -> View:
            wrapped = self.admin_site.admin_view(view)
            wrapped.model_admin = self  # type: ignore[attr-defined]
            return update_wrapper(wrapped, view)

        info = f"{self.opts.app_label}_{self.opts.model_name}"
        # Backup names never contain a slash, and <str:...> never matches one.
        return [
            path("", wrap(self.changelist_view), name=f"{info}_changelist"),
            path("create/", wrap(self.create_view), name=f"{info}_create"),
            path("moment/", wrap(self.restore_moment_view), name=f"{info}_restore_moment"),
            path("<str:name>/verify/", wrap(self.verify_view), name=f"{info}_verify"),
            path("<str:name>/download/", wrap(self.download_view), name=f"{info}_download"),
            path("<str:name>/delete/", wrap(self.delete_backup_view), name=f"{info}_delete"),
            path(
                "<str:name>/restore/",
                not_atomic(wrap(self.restore_view)),
                name=f"{info}_restore",
            ),
        ]

    # The listing -----------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        listed = services.backups()
        warnings = page_warnings()
        offsite = offsite_status(warnings)
        replication = replication_summary(warnings)
        show = services.time_display()
        rows = [Row.of(backup, show, offsite) for backup in listed]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": capfirst(self.opts.verbose_name_plural),
            "backups": rows,
            "last_backup": services.get_last_backup_display(),
            "warnings": warnings,
            "offsite": offsite is not None,
            "replication": replication,
            "chart": size_chart(listed, show),
            "growth_warning": services.growth_warning(),
            "has_add_permission": self.has_add_permission(request),
            "has_delete_permission": self.has_delete_permission(request),
            "has_restore_permission": self.has_restore_permission(request),
            "has_download_permission": self.has_download_permission(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self._template("change_list.html"), context)

    # Actions ---------------------------------------------------------------------------

    def create_view(self, request: HttpRequest) -> HttpResponse:
        return require_POST(self._create)(request)

    def _create(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            # The off-site copy is made after the answer: the page shows it as being copied.
            backup = services.backup_now(kind="manual", copy_in_background=True)
        except BackupFailed as exc:
            # The page's warnings say when, what to do, and the detail, once.
            self.message_user(
                request,
                _("The backup failed. %(cause)s") % {"cause": cause(exc.problem)},
                messages.ERROR,
            )
        else:
            self._log(request, backup.name, ADDITION, _("Backed up the database."))
            self.message_user(
                request,
                _("Backed up the database to %(name)s (%(size)s).")
                % {"name": backup.name, "size": filesizeformat(backup.size)},
                messages.SUCCESS,
            )
        return self._to_changelist()

    def verify_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return require_POST(self._verify)(request, name)

    def _verify(self, request: HttpRequest, name: str) -> HttpResponse:
        found = self._find(request, name, allowed=self.has_view_permission(request))
        if isinstance(found, HttpResponseBase):
            return found
        backup = found
        problems = services.verify(backup, full=True)
        if problems:
            self._log(request, backup.name, CHANGE, _("Verified: damaged."))
            self.message_user(
                request,
                with_detail(
                    _("The backup %(name)s is damaged: do not restore it.") % {"name": backup.name},
                    "; ".join(problems),
                ),
                messages.ERROR,
            )
        else:
            self._log(request, backup.name, CHANGE, _("Verified: intact."))
            self.message_user(
                request,
                _(
                    "The backup %(name)s is intact: it matches its checksum and passes "
                    "SQLite's checks."
                )
                % {"name": backup.name},
                messages.SUCCESS,
            )
        return self._to_changelist()

    def download_view(self, request: HttpRequest, name: str) -> HttpResponseBase:
        found = self._find(request, name, allowed=self.has_download_permission(request))
        if isinstance(found, HttpResponseBase):
            return found
        backup = found
        self._log(request, backup.name, CHANGE, _("Downloaded."))
        # FileResponse sends the open file in blocks, so memory stays flat for any size.
        return FileResponse(backup.path.open("rb"), as_attachment=True, filename=backup.name)

    def delete_backup_view(self, request: HttpRequest, name: str) -> HttpResponse:
        found = self._find(request, name, allowed=self.has_delete_permission(request))
        if isinstance(found, HttpResponseBase):
            return found
        backup = found
        if request.method != "POST" or request.POST.get("post") != "yes":
            return self._confirmation(request, "delete_confirmation.html", backup, _("Delete"))
        try:
            services.delete_backup(backup.name)
        except BackupNotFound:  # deleted since the page was shown
            return self._not_found(request, backup.name)
        except DeleteFailed as exc:
            self.message_user(
                request,
                with_detail(
                    _("The backup was not deleted. %(explained)s") % {"explained": explained(exc)},
                    str(exc),
                ),
                messages.ERROR,
            )
        else:
            self._log(request, backup.name, DELETION, _("Deleted."))
            self.message_user(
                request, _("Deleted the backup %(name)s.") % {"name": backup.name}, messages.SUCCESS
            )
        return self._to_changelist()

    def restore_view(self, request: HttpRequest, name: str) -> HttpResponse:
        found = self._find(request, name, allowed=self.has_restore_permission(request))
        if isinstance(found, HttpResponseBase):
            return found
        backup = found
        if backup.failed_check:
            self.message_user(
                request,
                _("The backup %(name)s is damaged: it cannot be restored. Restore another one.")
                % {"name": backup.name},
                messages.ERROR,
            )
            return self._to_changelist()
        if request.method != "POST" or request.POST.get("post") != "yes":
            try:
                missing, unknown = services.migration_difference(backup)
                changes = [change_text(change) for change in services.row_changes(backup)]
            except RestoreFailed as exc:
                self.message_user(
                    request,
                    with_detail(
                        _("This backup cannot be restored. %(explained)s")
                        % {"explained": explained(exc)},
                        str(exc),
                    ),
                    messages.ERROR,
                )
                return self._to_changelist()
            return self._confirmation(
                request,
                "restore_confirmation.html",
                backup,
                _("Restore"),
                missing_migrations=[f"{app}.{migration}" for app, migration in missing],
                unknown_migrations=[f"{app}.{migration}" for app, migration in unknown],
                changes=changes,
                since=timesince(backup.created_at),
            )
        try:
            report = services.restore(backup.name, copy_in_background=True)
        except BackupNotFound:  # deleted since the page was shown
            return self._not_found(request, backup.name)
        except RestoreFailed as exc:
            if exc.database_changed:
                text = _(
                    "The restored database failed its check and could not be put back: the "
                    "site now runs on the restored data, which may be damaged. Ask whoever "
                    "set up the server to look at it now."
                )
            else:
                text = _("The restore failed; the database is as it was. %(explained)s") % {
                    "explained": explained(exc)
                }
            self.message_user(request, with_detail(text, str(exc)), messages.ERROR)
            return self._to_changelist()
        # Only now: the restore replaced every table, the admin's history included.
        self._log_after_restore(request, report)
        if report.safety_backup is not None:
            text = _(
                "Restored the database from %(name)s. The data as it was just before is in "
                "the safety backup %(safety)s."
            ) % {"name": report.restored.name, "safety": report.safety_backup.name}
        else:
            text = _("Restored the database from %(name)s.") % {"name": report.restored.name}
        self.message_user(request, text, messages.SUCCESS)
        if report.warning is not None:
            self.message_user(
                request,
                _(
                    "The database was too busy to be checked right after the restore. The "
                    "restore is complete; the next daily backup checks the database in full."
                ),
                messages.WARNING,
            )
        if report.missing_migrations:
            self.message_user(
                request,
                _("The backup predates migrations of the current code; run migrate: %(names)s")
                % {"names": ", ".join(f"{a}.{m}" for a, m in report.missing_migrations)},
                messages.WARNING,
            )
        return self._to_changelist()

    def restore_moment_view(self, request: HttpRequest) -> HttpResponse:
        """A moment picked from the replica's window, fetched as a backup, then the same
        confirmation as any restore (``restore_view``)."""
        if not self.has_restore_permission(request):
            raise PermissionDenied
        if not services.replication_configured():
            raise Http404(_("Continuous replication is not set up."))
        try:
            seen = services.replication_seen()
        except ImproperlyConfigured as exc:
            self.message_user(
                request, with_detail(replication_settings_wrong(), str(exc)), messages.ERROR
            )
            return self._to_changelist()
        form = MomentForm(seen, request.POST if request.method == "POST" else None)
        if form.is_valid():
            moment = form.cleaned_data["moment"]
            try:
                # Litestream fetches it from the replica: a network call, on a person's click.
                backup = services.fetch_moment(moment)
            except services.BadMoment as exc:
                form.add_error("moment", with_detail(refused(moment, seen), str(exc)))
            except RestoreFailed as exc:
                self.message_user(request, not_fetched(exc), messages.ERROR)
            else:
                when = backup.created_at.astimezone(services.time_zone()).strftime(SHOWN_FORMAT)
                self._log(
                    request,
                    backup.name,
                    ADDITION,
                    _("Fetched from the replica: the database as it was at %(when)s.")
                    % {"when": when},
                )
                older = older_than_chosen(moment, backup.created_at)
                if older is not None:
                    self.message_user(request, older, messages.WARNING)
                return HttpResponseRedirect(
                    reverse(
                        f"admin:{self.opts.app_label}_{self.opts.model_name}_restore",
                        args=[backup.name],
                        current_app=self.admin_site.name,
                    )
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Restore to a moment"),
            "form": form,
            "window": window_text(seen),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self._template("restore_moment.html"), context)

    # Helpers ---------------------------------------------------------------------------

    def _confirmation(
        self,
        request: HttpRequest,
        template: str,
        backup: BackupFile,
        title: str,
        **extra: Any,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "row": Row.of(backup, services.time_display()),
            **extra,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self._template(template), context)

    def _find(
        self, request: HttpRequest, name: str, *, allowed: bool
    ) -> BackupFile | HttpResponseRedirect:
        """The listed backup called ``name``, once the view's own permission is checked; back
        to the listing with a warning for any other name."""
        if not allowed:
            raise PermissionDenied
        try:
            return services.find_backup(name)
        except BackupNotFound:
            return self._not_found(request, name)

    def _template(self, name: str) -> list[str]:
        app_label, model_name = self.opts.app_label, self.opts.model_name
        return [f"admin/{app_label}/{model_name}/{name}", f"admin/{app_label}/{name}"]

    def _to_changelist(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
                current_app=self.admin_site.name,
            )
        )

    def _not_found(self, request: HttpRequest, name: str) -> HttpResponseRedirect:
        self.message_user(
            request,
            _("There is no backup called “%(name)s”. Perhaps it was deleted?") % {"name": name},
            messages.WARNING,
        )
        return self._to_changelist()

    def _log(self, request: HttpRequest, name: str, flag: int, message: str) -> None:
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(Backup),
            object_id=name,
            object_repr=name,
            action_flag=flag,
            change_message=message,
        )

    def _log_after_restore(self, request: HttpRequest, report: services.RestoreReport) -> None:
        # The restored database may number the content types differently.
        ContentType.objects.clear_cache()
        users = get_user_model()._default_manager
        if not users.filter(pk=request.user.pk).exists():
            logger.warning(
                "Not recording the restore of %s in the admin history: the user %s is not in "
                "the restored database",
                report.restored.name,
                request.user,
            )
            return
        message = _("Restored the database from this backup.")
        if report.safety_backup is not None:
            message += " " + _("Safety backup: %(name)s.") % {"name": report.safety_backup.name}
        self._log(request, report.restored.name, CHANGE, message)
