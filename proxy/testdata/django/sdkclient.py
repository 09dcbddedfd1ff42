# The requests CVAT's SDK and CLI send (cvat-sdk/cvat_sdk/core: client.py,
# uploading.py; cvat-cli's common.py), over urllib3, the SDK's own transport,
# to the proxy at ADDR as to the public origin ORIGIN. Prints one JSON line
# per request: what was sent and what came back.
#
#   sdkclient.py ADDR ORIGIN MODE [SECRET] [--spoof]
#
# MODE is how the client signs in:
#   pat       Authorization: Bearer SECRET (CVAT_ACCESS_TOKEN,
#             AccessTokenCredentials)
#   token     Authorization: Token SECRET, a legacy API key
#   basic     Authorization: Basic, SECRET being user:password
#             (Configuration(username=, password=))
#   password  POST /api/auth/login with user:password SECRET and no
#             Authorization (Client.login((user, password)), cvat-cli
#             --auth user:pass): then Authorization: Token <key> and the
#             sessionid and csrftoken cookies it got (get_common_headers)
# --spoof adds, to every request, forwarded headers naming another host,
# scheme and port, as a client may send them.
import base64
import json
import sys
from urllib.parse import quote

import urllib3

addr, origin, mode = sys.argv[1], sys.argv[2], sys.argv[3]
secret = sys.argv[4] if len(sys.argv) > 4 and not sys.argv[4].startswith("--") else ""
spoof = "--spoof" in sys.argv
http = urllib3.PoolManager(retries=False, timeout=10)
# The SDK's ApiClient.default_headers.
common = {"User-Agent": "cvat_sdk/2.50.0"}
cookies = {}
OLDER_RQ_ID = "export:task-1-dataset-in-CVAT_for_images_1@1-format-by-1"
SPOOF = {
    "Host": "evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Port": "8443",
    "Forwarded": "for=203.0.113.9;host=evil.example;proto=http",
}


def call(step, method, url, headers=None, body=None, fields=None):
    """One request as the SDK's RESTClientObject makes it; url is absolute
    at the public origin, sent to the proxy instead."""
    assert url.startswith(origin + "/"), f"{step}: {url} is not at {origin}"
    h = dict(common)
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    h.update(headers or {})
    h["Host"] = origin.split("://", 1)[1]
    if spoof:
        h.update(SPOOF)
    target = "http://" + addr + url[len(origin):]
    if fields is not None:
        r = http.request(method, target, headers=h, fields=fields, encode_multipart=False)
    else:
        r = http.request(method, target, headers=h, body=body, redirect=False)
    try:
        data = json.loads(r.data) if r.data else None
    except ValueError:
        data = r.data.decode("utf-8", "replace")
    set_cookies = [c.split("=", 1)[0] for c in r.headers.getlist("Set-Cookie")]
    print(json.dumps({
        "step": step, "method": method, "url": url,
        "sent_authorization": h.get("Authorization", "").split(" ")[0],
        "status": r.status,
        "content_type": r.headers.get("Content-Type", ""),
        "location": r.headers.get("Location", ""),
        "upload_offset": r.headers.get("Upload-Offset", ""),
        "set_cookies": set_cookies,
        "body": data,
    }), flush=True)
    for c in r.headers.getlist("Set-Cookie"):
        name, _, rest = c.partition("=")
        cookies[name] = rest.split(";", 1)[0]
    return r, data


api = origin + "/api"
# Client.__init__ -> check_server_version(): no credentials yet; a failure
# is only a warning ("Failed to retrieve server API version").
call("about before sign-in", "GET", api + "/server/about", {"Accept": "application/vnd.cvat+json"})

if mode == "pat":
    common["Authorization"] = "Bearer " + secret
elif mode == "token":
    common["Authorization"] = "Token " + secret
elif mode == "basic":
    common["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
elif mode == "password":
    user, _, password = secret.partition(":")
    r, data = call("password sign-in", "POST", api + "/auth/login",
                   {"Content-Type": "application/json", "Accept": "application/vnd.cvat+json"},
                   body=json.dumps({"username": user, "password": password}))
    if r.status != 200:
        sys.exit(0)  # the SDK raises ApiException here
    # Client.login: assert both cookies came, then the key as a Token.
    assert "sessionid" in cookies and "csrftoken" in cookies, cookies
    common["Authorization"] = "Token " + data["key"]
else:
    sys.exit(f"no mode {mode}")

# cvat-cli's build_client checks the version after signing in.
call("about", "GET", api + "/server/about", {"Accept": "application/vnd.cvat+json"})
call("self", "GET", api + "/users/self", {"Accept": "application/vnd.cvat+json"})

# Task data upload (DataUploader.upload_files): Upload-Start, a file over
# TUS (its Location followed as urljoin(client url, Location)), Upload-Finish.
data_url = api + "/tasks/1/data/"
call("upload start", "POST", data_url, {"Upload-Start": ""})
payload = b"frame" * 4096
meta = "filename " + base64.b64encode(b"frames.zip").decode()
r, _ = call("tus create", "POST", data_url, {
    "Origin": origin, "Tus-Resumable": "1.0.0",
    "upload-length": str(len(payload)), "upload-metadata": meta,
})
location = r.headers.get("Location", "")
if r.status == 201 and location.startswith(origin + "/"):
    call("tus offset", "HEAD", location, {"Origin": origin, "Tus-Resumable": "1.0.0"})
    call("tus chunk", "PATCH", location, {
        "Origin": origin, "Tus-Resumable": "1.0.0", "upload-offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }, body=payload)
    call("tus offset after", "HEAD", location, {"Origin": origin, "Tus-Resumable": "1.0.0"})
r, data = call("upload finish", "POST", data_url, {"Upload-Finish": "", "Content-Type": "application/json"},
               body=json.dumps({"image_quality": 70}))
# Client.wait_for_completion: requests_api.retrieve(rq_id), the id quoted
# whole into the path.
if isinstance(data, dict) and data.get("rq_id"):
    call("wait for completion", "GET", api + "/requests/" + quote(data["rq_id"], safe=""),
         {"Accept": "application/vnd.cvat+json"})
# An id of the form CVAT's RQId.render gave before (an export's).
call("wait for an export", "GET", api + "/requests/" + quote(OLDER_RQ_ID, safe=""),
     {"Accept": "application/vnd.cvat+json"})
