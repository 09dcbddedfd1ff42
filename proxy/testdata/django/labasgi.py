import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsettings")
os.environ.setdefault("LAB_SERVER", "uvicorn")
from django.core.asgi import get_asgi_application
application = get_asgi_application()
