# What Django saw of a request, as CVAT's header auth reads it
# (cvat.apps.iam.auth_header: META["HTTP_X_EMAIL"], META["HTTP_X_GROUPS"]
# split on commas), and Django's own URLs for it.
import hashlib
import os

from django.http import JsonResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def seen(request):
    body = request.body
    groups = request.META.get("HTTP_X_GROUPS")
    return JsonResponse({
        "server": os.environ.get("LAB_SERVER", ""),
        "email": request.META.get("HTTP_X_EMAIL"),
        "groups": [g.strip() for g in groups.split(",")] if groups else [],
        "identity_meta": {k: v for k, v in request.META.items() if "EMAIL" in k or "GROUP" in k},
        "identity_headers": {k: v for k, v in request.headers.items() if "mail" in k.lower() or "group" in k.lower()},
        "content_length": request.META.get("CONTENT_LENGTH"),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "absolute": request.build_absolute_uri(),
    })


urlpatterns = [re_path(r"^.*$", seen)]
