from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Backup",
            fields=[
                (
                    "name",
                    models.CharField(
                        max_length=255, primary_key=True, serialize=False, verbose_name="name"
                    ),
                ),
            ],
            options={
                "verbose_name": "backup",
                "verbose_name_plural": "backups",
                "managed": False,
                "default_permissions": ("view", "add", "delete"),
                "permissions": (
                    ("restore_backup", "Can restore the database from a backup"),
                    ("download_backup", "Can download a backup"),
                ),
            },
        ),
    ]
