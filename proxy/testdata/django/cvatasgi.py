# cvatsettings' application under uvicorn, as cvat_server runs it, with its
# database made first: CVAT's user alice, whose password is alice-password,
# with an API key.
import os
import threading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cvatsettings")
os.environ.setdefault("LAB_SERVER", "uvicorn")

import django

django.setup()

from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.core.management import call_command
from rest_framework.authtoken.models import Token


def make_database():
    call_command("migrate", verbosity=0, interactive=False)
    alice = User.objects.create_user("alice", "alice@example.com", "alice-password")
    # A legacy API key of hers, as an earlier password sign-in made it.
    Token.objects.create(user=alice, key="5ba1c0ffee5ba1c0ffee5ba1c0ffee5ba1c0ffee")


# uvicorn imports this module in its event loop, where Django refuses to
# touch the database: make it in a thread of its own.
setup = threading.Thread(target=make_database)
setup.start()
setup.join()
application = get_asgi_application()
