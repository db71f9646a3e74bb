from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .models import Appointment, Artist, Client, Payment


@admin.register(Artist)
class ArtistAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "specialty", "active")
    list_editable = ("active",)
    list_filter = ("active", "specialty")
    search_fields = ("name", "specialty")


@admin.register(Client)
class ClientAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("last_name", "first_name", "phone", "email", "created_at")
    list_display_links = ("last_name", "first_name")
    search_fields = ("first_name", "last_name", "phone", "email")
    date_hierarchy = "created_at"
    show_full_result_count = False


class PaymentInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Payment
    extra = 0
    fields = ("amount", "method", "paid_at")


@admin.register(Appointment)
class AppointmentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("starts_at", "client", "artist", "status", "price", "deposit")
    list_filter = ("status", "artist")
    list_select_related = ("client", "artist")
    search_fields = ("client__first_name", "client__last_name", "client__phone")
    autocomplete_fields = ("client",)
    date_hierarchy = "starts_at"
    inlines = (PaymentInline,)
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("client", "artist", "starts_at", "duration_minutes", "status")}),
        (_("Design"), {"fields": ("design_description",)}),
        (_("Money"), {"fields": ("price", "deposit")}),
    )


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("paid_at", "appointment", "amount", "method")
    list_filter = ("method",)
    list_select_related = ("appointment__client",)
    search_fields = ("appointment__client__first_name", "appointment__client__last_name")
    autocomplete_fields = ("appointment",)
    date_hierarchy = "paid_at"
    show_full_result_count = False
