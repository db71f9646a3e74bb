from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

ZERO_MXN = Decimal("0.00")


class Artist(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    specialty = models.CharField(_("specialty"), max_length=100, blank=True)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ("name",)
        verbose_name = _("artist")
        verbose_name_plural = _("artists")

    def __str__(self) -> str:
        return self.name


class Client(models.Model):
    first_name = models.CharField(_("first name"), max_length=100)
    last_name = models.CharField(_("last name"), max_length=100)
    phone = models.CharField(_("phone"), max_length=20, blank=True)
    email = models.EmailField(_("email"), blank=True)
    birth_date = models.DateField(_("birth date"), null=True, blank=True)
    notes = models.TextField(
        _("notes"), blank=True, help_text=_("Allergies, skin conditions, preferences.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ("last_name", "first_name")
        indexes = (models.Index(fields=("last_name", "first_name")),)
        verbose_name = _("client")
        verbose_name_plural = _("clients")

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}"


class Appointment(models.Model):
    class Status(models.TextChoices):
        BOOKED = "booked", _("Booked")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")
        NO_SHOW = "no_show", _("No-show")

    client = models.ForeignKey(
        Client,
        on_delete=models.PROTECT,
        related_name="appointments",
        verbose_name=_("client"),
    )
    artist = models.ForeignKey(
        Artist,
        on_delete=models.PROTECT,
        related_name="appointments",
        verbose_name=_("artist"),
    )
    starts_at = models.DateTimeField(_("starts at"), db_index=True)
    duration_minutes = models.PositiveIntegerField(_("duration (minutes)"), default=60)
    design_description = models.TextField(_("design description"), blank=True)
    price = models.DecimalField(
        _("price (MXN)"),
        max_digits=10,
        decimal_places=2,
        validators=[MinValueValidator(ZERO_MXN)],
    )
    deposit = models.DecimalField(
        _("deposit (MXN)"),
        max_digits=10,
        decimal_places=2,
        default=ZERO_MXN,
        validators=[MinValueValidator(ZERO_MXN)],
    )
    status = models.CharField(
        _("status"), max_length=10, choices=Status.choices, default=Status.BOOKED
    )

    class Meta:
        ordering = ("-starts_at",)
        verbose_name = _("appointment")
        verbose_name_plural = _("appointments")

    def __str__(self) -> str:
        local_start = timezone.localtime(self.starts_at)
        return f"{local_start:%Y-%m-%d %H:%M} · {self.client}"


class Payment(models.Model):
    class Method(models.TextChoices):
        CASH = "cash", _("Cash")
        CARD = "card", _("Card")
        TRANSFER = "transfer", _("Bank transfer")

    appointment = models.ForeignKey(
        Appointment,
        on_delete=models.PROTECT,
        related_name="payments",
        verbose_name=_("appointment"),
    )
    amount = models.DecimalField(
        _("amount (MXN)"),
        max_digits=10,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.01"))],
    )
    method = models.CharField(_("method"), max_length=10, choices=Method.choices)
    paid_at = models.DateTimeField(_("paid at"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ("-paid_at",)
        verbose_name = _("payment")
        verbose_name_plural = _("payments")

    def __str__(self) -> str:
        return f"${self.amount} MXN ({self.get_method_display()})"
