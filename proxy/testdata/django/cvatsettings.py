# labsettings with CVAT's REST framework set-up (cvat/settings/base.py):
# its authentication classes, in its order (a legacy API key as
# "Authorization: Token", a Personal Access Token as "Authorization: Bearer"
# (cvat.apps.access_tokens), Django's session, HTTP Basic), anonymous calls
# throttled at 100 a minute, JSON in and out. Users, sessions and API keys
# live in the SQLite file LAB_DB, which cvatasgi migrates at start.
import os

from labsettings import *  # noqa: F401,F403

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rest_framework",
    "rest_framework.authtoken",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "cvatviews"
# CVAT's docker-compose.yml gives cvat_server ALLOWED_HOSTS '*': whatever
# host a request names, Django builds its URLs with it.
ALLOWED_HOSTS = ["*"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["LAB_DB"]}}
# The test's one password is checked a few times: no need for PBKDF2's cost.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CSRF_COOKIE_NAME = "csrftoken"
REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["cvatapi.CVATAPIRenderer", "rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "cvatapi.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": "100/minute"},
}
