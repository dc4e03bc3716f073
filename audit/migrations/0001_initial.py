# Adopts the audit table made by the `sparkcontrol` app (0001) without touching it; the next migration, generated
# by makemigrations, renames it to this app's name. A new database gets the same table through the same steps.

from django.db import migrations, models


def adopt_content_type(apps, schema_editor):
    """Keep permissions and admin history: the old app's content type becomes this app's."""
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="audit", model="auditentry").exists():
        content_type.objects.filter(app_label="sparkcontrol", model="auditentry").update(app_label="audit")


def adopt_content_type_back(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="audit", model="auditentry").update(app_label="sparkcontrol")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("sparkcontrol", "0003_move_tokens_and_audit_to_their_apps"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditEntry",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("actor", models.CharField(max_length=150)),
                        ("action", models.CharField(db_index=True, max_length=64)),
                        ("target", models.CharField(blank=True, max_length=200)),
                        ("detail", models.JSONField(blank=True, default=dict)),
                    ],
                    options={"verbose_name_plural": "audit entries", "ordering": ["-at", "-id"], "db_table": "sparkcontrol_auditentry"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(adopt_content_type, adopt_content_type_back),
    ]
