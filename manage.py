#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderdesk.settings")
    if sys.argv[1:2] == ["up"]:
        # `up` is the one command that may create the demo's secret key, before settings load.
        from orderdesk.secret_key import ensure_secret_key_file

        ensure_secret_key_file()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
