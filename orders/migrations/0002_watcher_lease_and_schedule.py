from django.db import migrations
from django.utils import timezone


def create(apps, schema_editor):
    apps.get_model("orders", "WatcherLease").objects.get_or_create(name="orderwatcher")
    # Restarts the watcher chain within a minute if it ever breaks; a run that finds a
    # live lease exits at once.
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="orderwatcher",
        defaults={"func": "orders.tasks.watch_orders", "schedule_type": "I", "minutes": 1,
                  "repeats": -1, "next_run": timezone.now()},
    )


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="orderwatcher").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(create, remove)]
