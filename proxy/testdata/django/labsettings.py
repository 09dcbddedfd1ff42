# Django settings shaped like CVAT's behind a proxy (cvat/settings/base.py):
# the scheme from X-Forwarded-Proto, the host from X-Forwarded-Host, header
# auth reading META. No database: the views only say what Django saw.
SECRET_KEY = "portcullis-test-only"
DEBUG = False
ALLOWED_HOSTS = ["cvat.example.com"]
USE_X_FORWARDED_HOST = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
ROOT_URLCONF = "labviews"
INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES = {}
LOGGING = {"version": 1, "disable_existing_loggers": False}
