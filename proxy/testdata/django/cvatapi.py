# The classes of CVAT's that cvatsettings' REST_FRAMEWORK names. Apart from
# cvatviews, which the REST framework's settings would otherwise import
# half-made.
from django.contrib.auth.models import User
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.renderers import JSONRenderer


class CVATAPIRenderer(JSONRenderer):
    """cvat.apps.engine.renderers: JSON as the SDK asks for it."""

    media_type = "application/vnd.cvat+json"

# Personal Access Tokens, which CVAT keeps in its database and a user makes
# on the Security tab of the profile page.
PERSONAL_ACCESS_TOKENS = {"pat-of-alice-1f0e8c2a": "alice"}


class AccessTokenAuthentication(TokenAuthentication):
    """cvat.apps.access_tokens.authentication: "Authorization: Bearer <PAT>"."""

    keyword = "Bearer"

    def authenticate_credentials(self, key):
        name = PERSONAL_ACCESS_TOKENS.get(key)
        if name is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        return (User.objects.get(username=name), key)
