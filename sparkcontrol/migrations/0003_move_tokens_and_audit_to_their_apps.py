# The API tokens moved to the `accounts` app and the audit trail to the `audit` app. Their tables stay where they
# are in this step (no database operation): the new apps adopt them in their first migration and then rename them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("sparkcontrol", "0002_apitoken_expires_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="APIToken"),
                migrations.DeleteModel(name="AuditEntry"),
            ],
            database_operations=[],
        ),
    ]
