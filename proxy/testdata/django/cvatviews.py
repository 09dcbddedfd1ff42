# CVAT's API as its SDK and CLI meet it, at CVAT's paths: sign-in
# (cvat.apps.iam: dj_rest_auth's login, which answers the REST framework key
# and sets Django's sessionid and csrftoken cookies), the server's about,
# the signed-in user, a task's data upload (cvat.apps.engine.mixins'
# UploadMixin: CVAT's Upload-Start and Upload-Finish around TUS 1.0.0,
# whose Location CVAT builds from the request) and the request status the SDK
# polls. Every view also says what Django saw of the request.
import uuid
from urllib.parse import urljoin

from django.contrib.auth import authenticate, login
from django.contrib.auth.models import User
from django.urls import re_path
from rest_framework.authtoken.models import Token
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

def saw(request):
    """What Django made of the request: who, how, and the URLs it builds."""
    return {
        "user": request.user.username if request.user.is_authenticated else None,
        "authenticator": type(request.successful_authenticator).__name__ if request.successful_authenticator else None,
        "identity_meta": {k: v for k, v in request.META.items() if "EMAIL" in k or "GROUP" in k},
        "cookies": sorted(request.COOKIES),
        "absolute": request.build_absolute_uri(),
        "secure": request.is_secure(),
        "path": request.path,
    }


@api_view(["POST"])
@permission_classes([AllowAny])
def auth_login(request):
    user = authenticate(request, username=request.data.get("username"), password=request.data.get("password"))
    if user is None:
        return Response({"non_field_errors": ["Unable to log in with provided credentials."]}, status=400)
    login(request, user)  # the sessionid cookie; and a new csrftoken
    token, _ = Token.objects.get_or_create(user=user)
    return Response({"key": token.key})


@api_view(["GET"])
@permission_classes([AllowAny])
def server_about(request):
    return Response({"name": "Computer Vision Annotation Tool", "version": "2.50.0", "saw": saw(request)})


@api_view(["GET"])
def users_self(request):
    return Response({"username": request.user.username, "email": request.user.email, "saw": saw(request)})


UPLOADS = {}  # TUS file id -> [length, bytes received]


def tus_response(status, headers=None, data=None):
    response = Response(data, status)
    response["Tus-Resumable"] = "1.0.0"
    for k, v in (headers or {}).items():
        response[k] = v
    return response


@api_view(["POST"])
def task_data(request, task_id):
    if "Upload-Finish" in request.headers:
        rq_id = f"action=create&target=task&target_id={task_id}"
        return Response({"rq_id": rq_id, "saw": saw(request)}, status=202)
    if "Upload-Start" in request.headers:
        return Response({"saw": saw(request)}, status=202)
    if "Upload-Length" in request.headers:
        file_id = str(uuid.uuid4())
        UPLOADS[file_id] = [int(request.headers["Upload-Length"]), b""]
        # As UploadMixin.init_tus_upload builds it.
        location = request.build_absolute_uri()
        if "HTTP_X_FORWARDED_HOST" not in request.META:
            location = request.META.get("HTTP_ORIGIN") + request.META.get("PATH_INFO")
        return tus_response(201, {"Location": urljoin(location, file_id), "Upload-Filename": "frames.zip"}, {"saw": saw(request)})
    return Response(status=400)


@api_view(["HEAD", "PATCH"])
def task_data_chunk(request, task_id, file_id):
    upload = UPLOADS.get(file_id)
    if upload is None:
        return tus_response(404)
    if request.method == "HEAD":
        return tus_response(200, {"Upload-Offset": len(upload[1]), "Upload-Length": upload[0]})
    if int(request.headers.get("Upload-Offset", "-1")) != len(upload[1]):
        return tus_response(409)
    upload[1] += request.body
    return tus_response(204, {"Upload-Offset": len(upload[1]), "Upload-Filename": "frames.zip"})


@api_view(["GET"])
def request_status(request, rq_id):
    return Response({"id": rq_id, "status": "finished", "saw": saw(request)})


urlpatterns = [
    re_path(r"^api/auth/login$", auth_login),
    re_path(r"^api/server/about$", server_about),
    re_path(r"^api/users/self$", users_self),
    re_path(r"^api/tasks/(?P<task_id>\d+)/data/$", task_data),
    re_path(r"^api/tasks/(?P<task_id>\d+)/data/(?P<file_id>[0-9a-f-]{36})$", task_data_chunk),
    re_path(r"^api/requests/(?P<rq_id>[^/]+)$", request_status),
]
