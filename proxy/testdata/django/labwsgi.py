import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labsettings")
os.environ.setdefault("LAB_SERVER", "gunicorn")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
