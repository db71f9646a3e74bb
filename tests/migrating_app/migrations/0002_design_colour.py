from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrating_app", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="design",
            name="colour",
            field=models.CharField(default="black", max_length=20),
        ),
        # Changes data as well as the schema, so that a restore has both to undo.
        migrations.RunSQL(
            "UPDATE migrating_app_design SET name = upper(name)", migrations.RunSQL.noop
        ),
    ]
