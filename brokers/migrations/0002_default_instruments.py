from django.db import migrations


def create(apps, schema_editor):
    from brokers.models import DEFAULT_INSTRUMENTS

    instrument = apps.get_model("brokers", "PaperInstrument")
    for exchange, symbol, price in DEFAULT_INSTRUMENTS:
        instrument.objects.get_or_create(exchange=exchange, symbol=symbol, defaults={"ref_price": price})


class Migration(migrations.Migration):
    dependencies = [("brokers", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
