"""Fill the studio database with realistic, reproducible sample data."""

from __future__ import annotations

import contextlib
import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from studio.models import Appointment, Artist, Client, Payment

BATCH_SIZE = 2_000
MAX_CLIENTS_PER_CHUNK = 2_000
MIN_CLIENTS_PER_CHUNK = 25
# Rough bytes per client (with its appointments and payments) before anything is measured.
INITIAL_BYTES_PER_CLIENT = 2_500
HISTORY_DAYS = 6 * 365
BOOKING_HORIZON_DAYS = 60
DEFAULT_SIZE = "10M"

SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)i?B?\s*$", re.IGNORECASE)
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}

ARTISTS = [
    ("Ana Sofía Ramírez", "Fine line"),
    ("Brenda Encinas", "Acuarela"),
    ("Carlos 'Charly' Valenzuela", "Realismo en negro y gris"),
    ("Iván Bojórquez", "Tradicional americano"),
    ("Jesús Molina", "Lettering chicano"),
    ("Mariana Félix", "Blackwork y geométrico"),
]

FIRST_NAMES = [
    "José",
    "Juan",
    "Luis",
    "Carlos",
    "Jesús",
    "Miguel",
    "Francisco",
    "Alejandro",
    "Jorge",
    "Ricardo",
    "Fernando",
    "Daniel",
    "Eduardo",
    "Manuel",
    "Héctor",
    "Iván",
    "Ramón",
    "Óscar",
    "Sergio",
    "Andrés",
    "Emiliano",
    "Santiago",
    "Diego",
    "Rodrigo",
    "Joaquín",
    "Adrián",
    "Martín",
    "Raúl",
    "Gerardo",
    "Arturo",
    "María",
    "Guadalupe",
    "Ana",
    "Sofía",
    "Fernanda",
    "Daniela",
    "Valeria",
    "Ximena",
    "Camila",
    "Regina",
    "Mariana",
    "Andrea",
    "Alejandra",
    "Gabriela",
    "Paola",
    "Karla",
    "Itzel",
    "Citlali",
    "Lucía",
    "Renata",
    "Verónica",
    "Rocío",
    "Claudia",
    "Yesenia",
    "Brenda",
    "Mónica",
    "Patricia",
    "Araceli",
    "Diana",
    "Zoé",
]

LAST_NAMES = [
    "García",
    "Hernández",
    "López",
    "Martínez",
    "González",
    "Pérez",
    "Rodríguez",
    "Sánchez",
    "Ramírez",
    "Flores",
    "Gómez",
    "Morales",
    "Vázquez",
    "Jiménez",
    "Reyes",
    "Díaz",
    "Torres",
    "Ruiz",
    "Mendoza",
    "Aguilar",
    "Ortiz",
    "Castillo",
    "Romero",
    "Valenzuela",
    "Encinas",
    "Bojórquez",
    "Félix",
    "Moreno",
    "Molina",
    "Quintero",
    "Duarte",
    "Ibarra",
    "Acosta",
    "Leyva",
    "Urías",
    "Verdugo",
    "Robles",
    "Soto",
    "Cota",
    "Ochoa",
    "Salazar",
    "Gastélum",
    "Navarro",
    "Tapia",
    "Zazueta",
    "Yocupicio",
    "Coronado",
    "Miranda",
    "Escalante",
    "Lugo",
]

EMAIL_DOMAINS = ["gmail.com", "hotmail.com", "outlook.com", "yahoo.com.mx", "icloud.com"]
EMAIL_DOMAIN_WEIGHTS = [55, 25, 10, 7, 3]

# Hermosillo first; then other Sonora area codes for clients from out of town.
AREA_CODES = ["662", "644", "631", "622", "653", "647"]
AREA_CODE_WEIGHTS = [80, 6, 4, 4, 3, 3]

CLIENT_NOTES = [
    "Alergia al látex: usar guantes de nitrilo.",
    "Piel sensible, tiende a enrojecerse; revisar cicatrización a las dos semanas.",
    "Prefiere citas por la tarde, después de las 5.",
    "Viene recomendado por un cliente frecuente.",
    "Toma anticoagulantes; pidió carta de su médico antes de la sesión.",
    "Tiene queloides en el hombro derecho, evitar esa zona.",
    "Primer tatuaje, le da nervio la aguja. Explicar el proceso con calma.",
    "Pide que le manden fotos del diseño por WhatsApp antes de la cita.",
    "Diabético, traer algo dulce por si acaso.",
    "Quiere cubrir un tatuaje viejo más adelante.",
    "Cliente frecuente, descuento del 10 % autorizado por el estudio.",
    "Solo habla por Instagram, casi no contesta llamadas.",
]

DESIGN_SUBJECTS = [
    "Rosa",
    "Calavera de azúcar",
    "Virgen de Guadalupe",
    "Colibrí",
    "Lobo",
    "Ajolote",
    "Nopal con flores",
    "Sagrado corazón",
    "Golondrinas",
    "Catrina",
    "Venado yaqui",
    "Saguaro al atardecer",
    "Serpiente y daga",
    "Mariposa monarca",
    "Reloj de arena",
    "Retrato de mascota",
    "Frase en letra chicana",
    "Mandala",
    "Brújula",
    "Águila y serpiente",
    "Ola japonesa",
    "Koi",
    "Luna y sol",
    "Rosario",
    "Fecha en números romanos",
    "Pitaya",
]

PLACEMENTS = [
    "antebrazo izquierdo",
    "antebrazo derecho",
    "muñeca",
    "tobillo",
    "pantorrilla",
    "muslo",
    "espalda alta",
    "espalda completa",
    "costillas",
    "clavícula",
    "hombro",
    "brazo completo (manga)",
    "nuca",
    "pecho",
    "mano",
    "detrás de la oreja",
]

DESIGN_DETAILS = [
    "Línea fina de 3RL en el contorno, sombreado suave con gris diluido.",
    "El cliente trae una referencia de Pinterest, pero quiere algo más original y menos saturado.",
    "Colores cálidos: naranja, magenta y un toque de amarillo para dar luz.",
    "Solo negro, nada de color; contraste fuerte con zonas de piel limpia.",
    "Agregar unas flores de cempasúchil alrededor para equilibrar la composición.",
    "Tamaño aproximado de 12 x 8 cm; revisar en la sesión que no se deforme con el músculo.",
    "Quiere que se vea bien en fotos, así que cuidar las transiciones de sombra.",
    "Incluir el nombre de su mamá en letra cursiva, discreto, dentro del diseño.",
    "Puntillismo en el fondo para dar textura sin recargar.",
    "Hacer el esténcil un poco más grande de lo que pidió; se veía muy apretado.",
    "Dividir en dos sesiones: primero contorno y sombras, luego color y detalles.",
    "La piel de esa zona es delgada; ir con poca profundidad y máquina a baja velocidad.",
    "Dibujo a mano alzada directamente sobre la piel para que siga la forma del cuerpo.",
    "Tomar como base el boceto aprobado por WhatsApp el martes, con los cambios en las hojas.",
    "Referencia del desierto de Sonora: cerros, palo verde y el cielo en degradado.",
    "Cuidar que las líneas no queden muy juntas para que no se empasten con los años.",
    "Pidió que se note la textura de las plumas, tipo grabado antiguo.",
    "Retocar en tres o cuatro semanas, ya que cicatrice, sin costo adicional.",
    "Usar tinta blanca en los brillos al final de la sesión.",
    "El diseño debe cubrir una cicatriz de cirugía de unos 6 cm sin que se marque el relieve.",
    "Composición vertical, que siga la línea del brazo y termine antes del codo.",
    "Estilo neotradicional: líneas gruesas, paleta limitada y sombras sólidas.",
    "Letras de 1.5 cm de alto como mínimo para que se lean con el tiempo.",
    "Integrar un patrón geométrico de triángulos alrededor, sin que compita con la figura.",
    "El cliente quiere algo que combine con el tatuaje que tiene en el otro brazo.",
    "Revisar la prueba de alergia a la tinta roja antes de empezar.",
    "Ojos realistas con reflejo, el resto del retrato más suelto.",
    "Tiempo estimado de cuatro horas con un descanso a la mitad.",
    "Dejar espacio arriba por si después quiere extender el diseño hacia el hombro.",
    "Mandar fotos del resultado para el Instagram del estudio si el cliente está de acuerdo.",
]

APPOINTMENTS_PER_CLIENT = [1, 2, 3, 4, 5, 6]
APPOINTMENTS_PER_CLIENT_WEIGHTS = [40, 25, 15, 10, 6, 4]

# (min price, max price, min minutes, max minutes, weight): small flash to full-day sessions.
PRICE_TIERS = [
    (800, 2_500, 60, 120, 45),
    (2_500, 6_000, 120, 240, 30),
    (6_000, 15_000, 240, 360, 18),
    (15_000, 30_000, 360, 480, 7),
]
PRICE_TIER_WEIGHTS = [tier[4] for tier in PRICE_TIERS]

PAST_STATUSES = [
    Appointment.Status.DONE,
    Appointment.Status.CANCELLED,
    Appointment.Status.NO_SHOW,
]
PAST_STATUS_WEIGHTS = [85, 7, 8]

METHODS = [Payment.Method.CASH, Payment.Method.CARD, Payment.Method.TRANSFER]
METHOD_WEIGHTS = [45, 35, 20]


def parse_size(value: str) -> int:
    """Parse a size such as ``500K``, ``100M`` or ``1.5G`` (binary units) into bytes."""
    match = SIZE_RE.match(value)
    if match is None:
        raise ValueError(f"invalid size {value!r}; use a number with K, M or G, e.g. 100M")
    number, unit = match.groups()
    size = int(float(number) * UNITS[unit.upper()])
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str:
    if size >= 1024**3:
        return f"{size / 1024**3:.2f} GB"
    if size >= 1024**2:
        return f"{size / 1024**2:.1f} MB"
    return f"{size / 1024:.1f} KB"


def _ascii(text: str) -> str:
    normalized = unicodedata.normalize("NFKD", text)
    return normalized.encode("ascii", "ignore").decode("ascii").lower().replace(" ", "")


FIRST_NAMES_ASCII = {name: _ascii(name) for name in FIRST_NAMES}
LAST_NAMES_ASCII = {name: _ascii(name) for name in LAST_NAMES}


@dataclass
class Totals:
    clients: int = 0
    appointments: int = 0
    payments: int = 0


class SampleDataFactory:
    """Builds unsaved model instances; all randomness comes from one seeded generator."""

    def __init__(self, rng: random.Random, artists: list[Artist], cutoff: datetime) -> None:
        self.rng = rng
        self.artists = artists
        self.cutoff = cutoff
        self.history_start = cutoff - timedelta(days=HISTORY_DAYS)
        self.horizon = cutoff + timedelta(days=BOOKING_HORIZON_DAYS)
        tz = cutoff.tzinfo
        assert tz is not None
        self.tz: tzinfo = tz

    def client(self) -> Client:
        rng = self.rng
        first = rng.choice(FIRST_NAMES)
        paternal, maternal = rng.sample(LAST_NAMES, 2)
        # Growth curve: recent years bring more new clients than the early ones.
        day = self.history_start.date() + timedelta(days=int(rng.random() ** 0.6 * HISTORY_DAYS))
        created_at = datetime.combine(
            day, time(rng.randint(10, 19), rng.randint(0, 59), rng.randint(0, 59)), tzinfo=self.tz
        )
        email = ""
        if rng.random() < 0.8:
            user = f"{FIRST_NAMES_ASCII[first]}.{LAST_NAMES_ASCII[paternal]}{rng.randint(1, 999)}"
            domain = rng.choices(EMAIL_DOMAINS, EMAIL_DOMAIN_WEIGHTS)[0]
            email = f"{user}@{domain}"
        birth_date = None
        if rng.random() < 0.9:
            age_days = rng.randint(18 * 365, 55 * 365)
            birth_date = created_at.date() - timedelta(days=age_days)
        notes = ""
        if rng.random() < 0.35:
            notes = " ".join(rng.sample(CLIENT_NOTES, rng.randint(1, 3)))
        area = rng.choices(AREA_CODES, AREA_CODE_WEIGHTS)[0]
        return Client(
            first_name=first,
            last_name=f"{paternal} {maternal}",
            phone=f"+52 {area} {rng.randint(100, 999)} {rng.randint(0, 9999):04d}",
            email=email,
            birth_date=birth_date,
            notes=notes,
            created_at=created_at,
        )

    def design_description(self) -> str:
        rng = self.rng
        headline = f"{rng.choice(DESIGN_SUBJECTS)} en {rng.choice(PLACEMENTS)}."
        # Log-normal sentence count: mostly short briefs, a long tail of detailed ones (~4 KB).
        count = min(55, max(3, int(rng.lognormvariate(2.2, 0.65))))
        details = rng.choices(DESIGN_DETAILS, k=count)
        return " ".join([headline, *details])

    def appointments(self, client: Client) -> list[Appointment]:
        rng = self.rng
        wanted = rng.choices(APPOINTMENTS_PER_CLIENT, APPOINTMENTS_PER_CLIENT_WEIGHTS)[0]
        day = client.created_at.date() + timedelta(days=rng.randint(1, 30))
        result = []
        for _ in range(wanted):
            starts_at = datetime.combine(
                day, time(rng.randint(11, 19), rng.choice((0, 30))), tzinfo=self.tz
            )
            if starts_at > self.horizon:
                break
            low, high, min_minutes, max_minutes, _weight = rng.choices(
                PRICE_TIERS, PRICE_TIER_WEIGHTS
            )[0]
            price = rng.randint(low // 50, high // 50) * 50
            deposit = max(500, round(price * rng.uniform(0.2, 0.3) / 100) * 100)
            if starts_at >= self.cutoff:
                status = Appointment.Status.BOOKED
            else:
                status = rng.choices(PAST_STATUSES, PAST_STATUS_WEIGHTS)[0]
            result.append(
                Appointment(
                    client=client,
                    artist=rng.choice(self.artists),
                    starts_at=starts_at,
                    duration_minutes=rng.randint(min_minutes // 30, max_minutes // 30) * 30,
                    design_description=self.design_description(),
                    price=Decimal(price),
                    deposit=Decimal(min(deposit, price)),
                    status=status,
                )
            )
            day += timedelta(days=rng.randint(20, 400))
        return result

    def payments(self, appointment: Appointment) -> list[Payment]:
        rng = self.rng
        booked_at = appointment.starts_at - timedelta(
            days=rng.randint(1, 30), hours=rng.randint(0, 6)
        )
        if booked_at >= self.cutoff:
            booked_at = self.cutoff - timedelta(hours=rng.randint(2, 72))
        booked_at = max(booked_at, appointment.client.created_at)
        deposit = Payment(
            appointment=appointment,
            amount=appointment.deposit,
            method=rng.choices(METHODS, METHOD_WEIGHTS)[0],
            paid_at=booked_at,
        )
        if appointment.status != Appointment.Status.DONE:
            return [deposit]
        remainder = appointment.price - appointment.deposit
        if remainder <= 0:
            return [deposit]
        finished_at = appointment.starts_at + timedelta(minutes=appointment.duration_minutes)
        if remainder > 6_000 and rng.random() < 0.4:
            cash_part = Decimal(rng.randint(1, int(remainder) // 1_000) * 500)
            return [
                deposit,
                Payment(
                    appointment=appointment,
                    amount=cash_part,
                    method=Payment.Method.CASH,
                    paid_at=finished_at,
                ),
                Payment(
                    appointment=appointment,
                    amount=remainder - cash_part,
                    method=Payment.Method.CARD,
                    paid_at=finished_at,
                ),
            ]
        return [
            deposit,
            Payment(
                appointment=appointment,
                amount=remainder,
                method=rng.choices(METHODS, METHOD_WEIGHTS)[0],
                paid_at=finished_at,
            ),
        ]


def ensure_artists(alias: str) -> list[Artist]:
    manager = Artist.objects.using(alias)
    for name, specialty in ARTISTS:
        manager.get_or_create(name=name, defaults={"specialty": specialty})
    artists = list(manager.filter(active=True).order_by("name"))
    if not artists:
        raise CommandError("There are no active artists to assign appointments to.")
    return artists


def database_path(connection: BaseDatabaseWrapper) -> Path | None:
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict["NAME"])
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def on_disk_size(connection: BaseDatabaseWrapper, path: Path) -> int:
    """Size of the database file plus its write-ahead log, after folding the log back in."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += candidate.stat().st_size
    return total


class Command(BaseCommand):
    help = (
        "Fill the database with realistic sample data for a tattoo studio in Hermosillo. "
        "Give a target database size (--size 100M) or a number of clients (--clients N). "
        "Output is deterministic for a given --seed and --end-date."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group()
        target.add_argument(
            "--size",
            help=(
                "Target on-disk database size with a K, M or G suffix (binary units), "
                f"e.g. 10M, 100M, 1G. Default: {DEFAULT_SIZE}."
            ),
        )
        target.add_argument(
            "--clients", type=int, help="Number of clients to create instead of a target size."
        )
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
        parser.add_argument(
            "--end-date",
            type=date.fromisoformat,
            help=(
                "Last day of the generated history, YYYY-MM-DD (default: today). "
                f"Appointments up to {BOOKING_HORIZON_DAYS} days later are left booked."
            ),
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help='Database alias to fill (default: "default").',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias: str = options["database"]
        connection = connections[alias]
        clients_wanted: int | None = options["clients"]
        target_size: int | None = None
        if clients_wanted is None:
            try:
                target_size = parse_size(options["size"] or DEFAULT_SIZE)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        elif clients_wanted < 0:
            raise CommandError("--clients must not be negative.")

        if Client._meta.db_table not in connection.introspection.table_names():
            raise CommandError("The studio tables do not exist yet; run `manage.py migrate` first.")
        path = database_path(connection)
        if target_size is not None and path is None:
            raise CommandError("--size needs a file-based SQLite database; use --clients.")

        tz = timezone.get_default_timezone()
        end_date: date = options["end_date"] or timezone.localdate()
        cutoff = datetime.combine(end_date, time.min, tzinfo=tz)

        with transaction.atomic(using=alias):
            artists = ensure_artists(alias)
        factory = SampleDataFactory(random.Random(options["seed"]), artists, cutoff)
        totals = Totals()
        verbosity: int = options["verbosity"]

        size = on_disk_size(connection, path) if path is not None else 0
        start_size = size
        next_report = 0.1

        while True:
            if target_size is not None:
                assert path is not None
                remaining = target_size - size
                if remaining <= 0:
                    break
                grown = size - start_size
                bytes_per_client = (
                    grown / totals.clients
                    if totals.clients and grown > 0
                    else INITIAL_BYTES_PER_CLIENT
                )
                # Aim a little short each time so the final chunks home in on the target.
                chunk = int(0.8 * remaining / bytes_per_client)
                chunk = max(MIN_CLIENTS_PER_CHUNK, min(MAX_CLIENTS_PER_CHUNK, chunk))
            else:
                assert clients_wanted is not None
                chunk = min(MAX_CLIENTS_PER_CHUNK, clients_wanted - totals.clients)
                if chunk <= 0:
                    break

            self._insert_chunk(factory, chunk, alias, totals)
            # With DEBUG on, Django keeps the last 9,000 queries; ours hold whole batches of text.
            connection.queries_log.clear()
            if path is not None:
                size = on_disk_size(connection, path)

            if target_size is not None:
                progress = (size - start_size) / max(1, target_size - start_size)
            else:
                assert clients_wanted is not None
                progress = totals.clients / max(1, clients_wanted)
            if verbosity >= 1 and progress >= next_report:
                self.stdout.write(
                    f"  {min(progress, 1.0):4.0%}  {totals.clients:,} clients, "
                    f"{totals.appointments:,} appointments, {totals.payments:,} payments; "
                    f"database is {format_size(size)}"
                )
                while next_report <= progress:
                    next_report += 0.1

        if verbosity >= 1 and target_size is not None and totals.clients == 0:
            self.stdout.write(
                f"The database is already {format_size(size)}, which meets the "
                f"{format_size(target_size)} target; nothing to add."
            )
        elif verbosity >= 1:
            size_text = format_size(size) if path is not None else "not a local file"
            self.stdout.write(
                self.style.SUCCESS(
                    f"Seeded {totals.clients:,} clients, {totals.appointments:,} appointments, "
                    f"{totals.payments:,} payments; database is {size_text}"
                )
            )

    def _insert_chunk(
        self, factory: SampleDataFactory, count: int, alias: str, totals: Totals
    ) -> None:
        clients: list[Client] = []
        appointments: list[Appointment] = []
        payments: list[Payment] = []
        # Each client is generated together with its history so that the random stream, and
        # therefore the data, does not depend on how the work is split into chunks.
        for _ in range(count):
            client = factory.client()
            clients.append(client)
            for appointment in factory.appointments(client):
                appointments.append(appointment)
                payments.extend(factory.payments(appointment))
        with transaction.atomic(using=alias):
            Client.objects.using(alias).bulk_create(clients, batch_size=BATCH_SIZE)
            Appointment.objects.using(alias).bulk_create(appointments, batch_size=BATCH_SIZE)
            Payment.objects.using(alias).bulk_create(payments, batch_size=BATCH_SIZE)
        totals.clients += len(clients)
        totals.appointments += len(appointments)
        totals.payments += len(payments)
