#!/usr/bin/env python3
"""Fidelity check for google_emulator.py.

Part 1 drives the emulator only through Google's own Python libraries
(google-auth, google-auth-httplib2, google-api-python-client), built the way
docs/reference drive-api.md §9 describes: the bundled Drive v3 discovery
document with its rootUrl pointed at the emulator, `build_from_document`, and
an `AuthorizedHttp` around `googleapiclient.http.build_http()` (which stops
httplib2 from treating 308 as a redirect).  If Google's client accepts the
emulator's answers, the emulator speaks the protocol that client expects.

Part 2 is a raw-protocol smoke test with http.client for things the Python
client cannot show (the 308 Range header form, status queries, partial
persistence, connection drops, session expiry, SendGrid, the control API).

Each check prints `ok - NAME` or `FAIL - NAME: WHY`; the last line is
`N passed, M failed`.  Exit status 1 if anything failed.

Usage: python3 tests/emulator/fidelity_check.py [--verbose]
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.resources
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import google.auth.exceptions
import google_auth_httplib2
import googleapiclient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt
from google.auth import crypt
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import (MediaIoBaseDownload, MediaIoBaseUpload, MediaUpload,
                                  build_http)

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "google_emulator.py")
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
KIB = 1024
CHUNK = 256 * KIB

SA_EMAIL = "pgdrive-backup@pgdrive-test.iam.gserviceaccount.com"
DWD_SA_EMAIL = "pgdrive-dwd@pgdrive-test.iam.gserviceaccount.com"
FO_SA_EMAIL = "pgdrive-fileorganizer@pgdrive-test.iam.gserviceaccount.com"
# a service account of another Google Cloud project (another "app" for appProperties)
OTHER_PROJECT_SA_EMAIL = "pgdrive-backup@other-project.iam.gserviceaccount.com"
PERSON = "alice@example.com"
BOB = "bob@example.com"
CLIENT_ID = "123456789-pgdrive.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-emulator-secret"
REFRESH_TOKEN = "1//0emulator-refresh-token"
SENDGRID_KEY = "SG.emulator.key"

VERBOSE = "--verbose" in sys.argv
RESULTS = []


# -----------------------------------------------------------------------------
# Harness
# -----------------------------------------------------------------------------

def check(name):
    """Decorator: run a check now, record ok/FAIL."""
    def run(fn):
        try:
            fn()
        except Exception as exc:  # any failure is reported, never fatal
            why = "%s: %s" % (type(exc).__name__, exc) if not isinstance(exc, AssertionError) \
                else str(exc) or "assertion failed"
            print("FAIL - %s: %s" % (name, why.replace("\n", " ")[:500]))
            if VERBOSE:
                traceback.print_exc()
            RESULTS.append(False)
        else:
            print("ok - %s" % name)
            RESULTS.append(True)
        sys.stdout.flush()
        return fn
    return run


def expect(cond, why):
    if not cond:
        raise AssertionError(why)


def expect_http_error(fn, status, reason=None):
    """Call fn, require googleapiclient HttpError `status` with errors[0].reason `reason`."""
    try:
        fn()
    except HttpError as exc:
        expect(exc.status_code == status, "expected HTTP %d, got %d (%s)"
               % (status, exc.status_code, exc.reason))
        if reason is not None:
            details = exc.error_details
            got = details[0].get("reason") if isinstance(details, list) and details else None
            expect(got == reason, "expected reason %r, client read %r" % (reason, got))
        return exc
    raise AssertionError("expected HttpError %d, call succeeded" % status)


class Emulator:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, EMULATOR, "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("LISTENING http://"):
            raise SystemExit("emulator did not start: %r" % line)
        self.url = line.split(" ", 1)[1]
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "__emulator/" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            raw = resp.read()
        return json.loads(raw) if raw and resp.headers.get("Content-Type", "").startswith(
            "application/json") else raw

    def conn(self, timeout=10):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def raw(emu, method, path, body=b"", headers=None, conn=None):
    """One raw HTTP exchange; returns (status, headers dict (lower-case), body bytes)."""
    c = conn or emu.conn()
    c.request(method, path, body=body, headers=headers or {})
    resp = c.getresponse()
    data = resp.read()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    if conn is None:
        c.close()
    return resp.status, hdrs, data


# -----------------------------------------------------------------------------
# Set-up through the control API
# -----------------------------------------------------------------------------

emu = Emulator()
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

for email, dwd in ((SA_EMAIL, False), (DWD_SA_EMAIL, True), (FO_SA_EMAIL, False),
                   (OTHER_PROJECT_SA_EMAIL, False)):
    emu.control("POST", "service_accounts", {"client_email": email, "public_key_pem": PUBLIC_PEM,
                                             "dwd": dwd})
emu.control("POST", "authorized_users", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                                         "refresh_token": REFRESH_TOKEN, "email": PERSON})
emu.control("POST", "sendgrid_keys", {"key": SENDGRID_KEY})
SHARED_DRIVE = emu.control("POST", "shared_drives", {
    "name": "Backups", "members": {SA_EMAIL: "organizer", FO_SA_EMAIL: "fileOrganizer",
                                   OTHER_PROJECT_SA_EMAIL: "organizer"}})["id"]
SD_FOLDER = emu.control("POST", "folders", {"name": "pgdrive", "drive_id": SHARED_DRIVE})["id"]
MY_FOLDER = emu.control("POST", "folders", {"name": "backups", "owner": PERSON,
                                            "permissions": {SA_EMAIL: "writer"}})["id"]


def sa_info(email):
    project = email.split("@")[1].split(".")[0]  # NAME@PROJECT.iam.gserviceaccount.com
    return {"type": "service_account", "project_id": project,
            "private_key_id": "0123456789abcdef", "private_key": PRIVATE_PEM,
            "client_email": email, "client_id": "10000000000000000000",
            "token_uri": emu.url + "token"}


def sa_creds(email=SA_EMAIL):
    return service_account.Credentials.from_service_account_info(sa_info(email),
                                                                 scopes=[DRIVE_SCOPE])


def person_creds():
    return user_credentials.Credentials(token=None, refresh_token=REFRESH_TOKEN,
                                        client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                        token_uri=emu.url + "token")


DISCOVERY = json.loads((importlib.resources.files(googleapiclient)
                        / "discovery_cache/documents/drive.v3.json").read_text())
DISCOVERY["rootUrl"] = DISCOVERY["mtlsRootUrl"] = emu.url


def drive_for(creds):
    http = google_auth_httplib2.AuthorizedHttp(creds, http=build_http())
    return build_from_document(DISCOVERY, http=http)


def auth_request():
    return google_auth_httplib2.Request(build_http())


class UnknownSizeUpload(MediaUpload):
    """A stream whose length the client does not know (like pg_dump's stdout)."""

    def __init__(self, data, chunksize=CHUNK):
        self._data, self._chunksize = data, chunksize

    def chunksize(self):
        return self._chunksize

    def mimetype(self):
        return "application/gzip"

    def size(self):
        return None

    def resumable(self):
        return True

    def has_stream(self):
        return False

    def getbytes(self, begin, length):
        return self._data[begin:begin + length]


class KnownSizeUpload(UnknownSizeUpload):
    """Bytes-backed upload of known size (the `getbytes` code path).

    The 503-retry check uses this rather than MediaIoBaseUpload: with a
    stream-backed media, google-api-python-client's own chunk retry re-sends
    the `_StreamSlice` it already drained, i.e. an empty body under a
    Content-Length of a full chunk, so the retried request can never complete
    (against Google as against the emulator)."""

    def size(self):
        return len(self._data)


def resumable_upload(drive, data, name, parent=SD_FOLDER, chunksize=CHUNK, num_retries=0,
                     media=None, app_properties=None):
    media = media or MediaIoBaseUpload(io.BytesIO(data), mimetype="application/gzip",
                                       chunksize=chunksize, resumable=True)
    body = {"name": name, "parents": [parent]}
    if app_properties:
        body["appProperties"] = app_properties
    request = drive.files().create(body=body, media_body=media, supportsAllDrives=True,
                                   fields="id,name,size,md5Checksum,sha256Checksum")
    response = None
    while response is None:
        _, response = request.next_chunk(num_retries=num_retries)
    return response


def multipart_upload(drive, data, name, parent=SD_FOLDER, app_properties=None):
    body = {"name": name, "parents": [parent]}
    if app_properties:
        body["appProperties"] = app_properties
    media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/gzip", resumable=False)
    return drive.files().create(body=body, media_body=media, supportsAllDrives=True,
                                fields="id,name,size,md5Checksum").execute()


def payload(n, seed):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def md5(data):
    return hashlib.md5(data).hexdigest()


def requests_log():
    return emu.control("GET", "requests")["requests"]


try:
    SA = sa_creds()
    DRIVE = drive_for(SA)

    # =========================================================================
    # Part 1: Google's own client libraries
    # =========================================================================

    @check("token via JWT bearer grant (service account)")
    def _():
        SA.refresh(auth_request())
        expect(SA.token and SA.token.startswith("ya29."), "token %r" % SA.token)
        expect(SA.expiry is not None, "no expiry parsed")

    @check("domain-wide delegation: with_subject() acts as the user")
    def _():
        creds = service_account.Credentials.from_service_account_info(
            sa_info(DWD_SA_EMAIL), scopes=[DRIVE_SCOPE]).with_subject(PERSON)
        about = drive_for(creds).about().get(fields="user(emailAddress,kind)").execute()
        expect(about == {"user": {"emailAddress": PERSON, "kind": "drive#user"}}, repr(about))

    @check("with_subject() on a non-DWD service account -> unauthorized_client")
    def _():
        creds = sa_creds().with_subject(PERSON)
        try:
            creds.refresh(auth_request())
        except google.auth.exceptions.RefreshError as exc:
            expect("unauthorized_client" in str(exc), str(exc))
        else:
            raise AssertionError("refresh succeeded")

    @check("authorized_user refresh-token grant")
    def _():
        creds = person_creds()
        about = drive_for(creds).about().get(fields="user/emailAddress,storageQuota").execute()
        expect(creds.token.startswith("ya29."), "token")
        expect(about["user"] == {"emailAddress": PERSON}, repr(about))
        quota = about["storageQuota"]
        expect(all(isinstance(quota[k], str) for k in ("limit", "usage", "usageInDrive",
                                                       "usageInDriveTrash")),
               "quota numbers must be strings: %r" % quota)

    @check("authorized_user with a revoked refresh token -> invalid_grant")
    def _():
        creds = user_credentials.Credentials(token=None, refresh_token="1//wrong",
                                             client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                             token_uri=emu.url + "token")
        try:
            creds.refresh(auth_request())
        except google.auth.exceptions.RefreshError as exc:
            expect("invalid_grant" in str(exc) and "expired or revoked" in str(exc), str(exc))
        else:
            raise AssertionError("refresh succeeded")

    @check("about.get without fields -> 400")
    def _():
        exc = expect_http_error(lambda: DRIVE.about().get().execute(), 400)
        expect("fields" in exc.reason, exc.reason)

    KNOWN = payload(600_000, "known")

    @check("resumable upload, known size, 256 KiB chunks; invisible until complete")
    def _():
        media = MediaIoBaseUpload(io.BytesIO(KNOWN), mimetype="application/gzip",
                                  chunksize=CHUNK, resumable=True)
        request = DRIVE.files().create(body={"name": "known.sql.gz", "parents": [SD_FOLDER]},
                                       media_body=media, supportsAllDrives=True,
                                       fields="id,name,size,md5Checksum,sha256Checksum")
        status, response = request.next_chunk()
        expect(response is None and status.resumable_progress == CHUNK,
               "after chunk 1: %r" % (status.resumable_progress,))
        listed = DRIVE.files().list(q="'%s' in parents" % SD_FOLDER, supportsAllDrives=True,
                                    includeItemsFromAllDrives=True).execute()["files"]
        expect(all(f["name"] != "known.sql.gz" for f in listed), "file listed before completion")
        while response is None:
            status, response = request.next_chunk()
        expect(response["size"] == str(len(KNOWN)), "size %r" % response["size"])
        expect(response["md5Checksum"] == md5(KNOWN), "md5 mismatch")
        expect(response["sha256Checksum"] == hashlib.sha256(KNOWN).hexdigest(), "sha256")
        expect(set(response) == {"id", "name", "size", "md5Checksum", "sha256Checksum"},
               "fields mask of initiation not applied: %r" % sorted(response))
        ranges = [r["content_range"] for r in requests_log()
                  if r["op"] == "upload_chunk" and r["upload_id"] is not None][-3:]
        expect(ranges == ["bytes 0-262143/600000", "bytes 262144-524287/600000",
                          "bytes 524288-599999/600000"], repr(ranges))

    @check("resumable upload, unknown size (custom MediaUpload, size() is None)")
    def _():
        data = payload(600_005, "unknown")
        resp = resumable_upload(DRIVE, data, "unknown.sql.gz", media=UnknownSizeUpload(data))
        expect(resp["size"] == str(len(data)) and resp["md5Checksum"] == md5(data), repr(resp))
        ranges = [r["content_range"] for r in requests_log() if r["op"] == "upload_chunk"][-3:]
        expect(ranges[:2] == ["bytes 0-262143/*", "bytes 262144-524287/*"], repr(ranges))

    @check("resumable upload, unknown size, exact multiple of the chunk size")
    def _():
        data = payload(2 * CHUNK, "multiple")
        resp = resumable_upload(DRIVE, data, "multiple.sql.gz", media=UnknownSizeUpload(data))
        expect(resp["size"] == str(len(data)) and resp["md5Checksum"] == md5(data), repr(resp))
        last = [r for r in requests_log() if r["op"] == "upload_chunk"][-1]
        expect(last["content_range"] == "bytes 524288-524287/524288" and last["body_len"] == 0,
               "final request: %r" % last["content_range"])

    @check("resumable upload of an empty file, then downloading it (416 bytes */0)")
    def _():
        resp = resumable_upload(DRIVE, b"", "empty.bin")
        expect(resp["size"] == "0" and resp["md5Checksum"] == md5(b""), repr(resp))
        buf = io.BytesIO()
        dl = MediaIoBaseDownload(buf, DRIVE.files().get_media(fileId=resp["id"],
                                                              supportsAllDrives=True),
                                 chunksize=CHUNK)
        done = False
        while not done:
            _, done = dl.next_chunk()
        expect(buf.getvalue() == b"", "non-empty download")

    @check("multipart upload of a small file")
    def _():
        data = b"line one\nline two\r\n\x00\xff binary tail\n"
        resp = multipart_upload(DRIVE, data, "small.txt")
        expect(resp["size"] == str(len(data)) and resp["md5Checksum"] == md5(data), repr(resp))
        stored = emu.control("GET", "files/%s/content" % resp["id"])
        expect(stored == data, "stored bytes differ: %r" % stored[:80])

    LIST_FOLDER = DRIVE.files().create(
        body={"name": "listing", "parents": [SD_FOLDER],
              "mimeType": "application/vnd.google-apps.folder"},
        supportsAllDrives=True, fields="id").execute()["id"]

    @check("files.list: q with parents/trashed/appProperties, createdTime desc, paging by 2")
    def _():
        names = []
        for i in range(5):
            names.append(multipart_upload(DRIVE, b"x" * (i + 1), "db-%d.sql.gz" % i,
                                          parent=LIST_FOLDER,
                                          app_properties={"pgdrive": "1"})["name"])
        multipart_upload(DRIVE, b"foreign", "foreign.txt", parent=LIST_FOLDER)
        trashed = multipart_upload(DRIVE, b"t", "trashed.sql.gz", parent=LIST_FOLDER,
                                   app_properties={"pgdrive": "1"})
        DRIVE.files().update(fileId=trashed["id"], body={"trashed": True},
                             supportsAllDrives=True).execute()
        q = ("'%s' in parents and trashed = false and "
             "appProperties has { key='pgdrive' and value='1' }" % LIST_FOLDER)
        pages, token = [], None
        while True:
            resp = DRIVE.files().list(
                q=q, orderBy="createdTime desc", pageSize=2, pageToken=token,
                fields="nextPageToken,files(id,name,size,createdTime,md5Checksum,appProperties)",
                supportsAllDrives=True, includeItemsFromAllDrives=True, corpora="drive",
                driveId=SHARED_DRIVE).execute()
            pages.append([f["name"] for f in resp["files"]])
            for f in resp["files"]:
                expect(f["appProperties"] == {"pgdrive": "1"}, repr(f))
                expect(isinstance(f["size"], str), "size must be a string")
            token = resp.get("nextPageToken")
            if not token:
                break
        expect([len(p) for p in pages] == [2, 2, 1], "page sizes %r" % pages)
        got = [n for p in pages for n in p]
        expect(got == list(reversed(names)), "order %r" % got)
        all_items = DRIVE.files().list(q="'%s' in parents" % LIST_FOLDER, pageSize=100,
                                       supportsAllDrives=True,
                                       includeItemsFromAllDrives=True).execute()["files"]
        expect(any(f["name"] == "trashed.sql.gz" for f in all_items),
               "list without trashed=false must include trashed files")

    @check("fields masks: only requested keys; invalid selection -> 400")
    def _():
        resp = DRIVE.files().list(q="'%s' in parents" % LIST_FOLDER, pageSize=3,
                                  fields="files(id,name)", supportsAllDrives=True,
                                  includeItemsFromAllDrives=True).execute()
        expect(set(resp) == {"files"}, "top-level keys %r" % sorted(resp))
        expect(all(set(f) == {"id", "name"} for f in resp["files"]), repr(resp["files"]))
        default = DRIVE.files().list(q="'%s' in parents" % LIST_FOLDER, pageSize=1,
                                     supportsAllDrives=True,
                                     includeItemsFromAllDrives=True).execute()
        expect(set(default["files"][0]) == {"kind", "id", "name", "mimeType"},
               "default file fields %r" % sorted(default["files"][0]))
        fid = default["files"][0]["id"]
        one = DRIVE.files().get(fileId=fid, fields="id,size,capabilities/canDelete",
                                supportsAllDrives=True).execute()
        expect(set(one) == {"id", "size", "capabilities"} and
               one["capabilities"] == {"canDelete": True}, repr(one))
        exc = expect_http_error(lambda: DRIVE.files().get(fileId=fid, fields="id,bogus",
                                                          supportsAllDrives=True).execute(), 400)
        expect(exc.reason == "Invalid field selection bogus", exc.reason)

    @check("shared-drive item invisible without supportsAllDrives (404 notFound)")
    def _():
        fid = multipart_upload(DRIVE, b"hidden", "hidden.bin")["id"]
        expect_http_error(lambda: DRIVE.files().get(fileId=fid).execute(), 404, "notFound")
        listed = DRIVE.files().list(q="'%s' in parents" % SD_FOLDER).execute()["files"]
        expect(listed == [], "shared-drive items listed without includeItemsFromAllDrives")

    @check("get_media via MediaIoBaseDownload (256 KiB ranges) equals uploaded bytes")
    def _():
        fid = resumable_upload(DRIVE, KNOWN, "download.sql.gz")["id"]
        buf = io.BytesIO()
        dl = MediaIoBaseDownload(buf, DRIVE.files().get_media(fileId=fid, supportsAllDrives=True),
                                 chunksize=CHUNK)
        done, rounds = False, 0
        while not done:
            _, done = dl.next_chunk()
            rounds += 1
        expect(buf.getvalue() == KNOWN, "downloaded bytes differ")
        expect(rounds == 3, "expected 3 ranged requests, got %d" % rounds)

    @check("delete then get -> 404")
    def _():
        fid = multipart_upload(DRIVE, b"bye", "delete-me.bin")["id"]
        resp = DRIVE.files().delete(fileId=fid, supportsAllDrives=True).execute()
        expect(resp == "", "delete body %r" % resp)
        expect_http_error(lambda: DRIVE.files().get(fileId=fid, supportsAllDrives=True)
                          .execute(), 404, "notFound")

    @check("service account into a My Drive folder -> 403 storageQuotaExceeded")
    def _():
        exc = expect_http_error(lambda: multipart_upload(DRIVE, b"x", "nope.bin",
                                                         parent=MY_FOLDER),
                                403, "storageQuotaExceeded")
        expect(exc.reason.startswith("Service Accounts do not have storage quota."), exc.reason)
        exc = expect_http_error(lambda: resumable_upload(DRIVE, b"x" * 10, "nope.bin",
                                                         parent=MY_FOLDER),
                                403, "storageQuotaExceeded")

    @check("DWD user uploads into the same My Drive folder and owns the file")
    def _():
        creds = service_account.Credentials.from_service_account_info(
            sa_info(DWD_SA_EMAIL), scopes=[DRIVE_SCOPE]).with_subject(PERSON)
        drive = drive_for(creds)
        resp = multipart_upload(drive, b"mine", "mine.bin", parent=MY_FOLDER)
        meta = drive.files().get(fileId=resp["id"], fields="owners,ownedByMe,driveId").execute()
        expect(meta["ownedByMe"] is True and meta["owners"][0]["emailAddress"] == PERSON
               and "driveId" not in meta, repr(meta))

    @check("503 on a chunk is survived by next_chunk(num_retries=3)")
    def _():
        data = payload(3 * CHUNK + 17, "retry")
        emu.control("POST", "faults", {"rules": [{"op": "upload_chunk", "nth": 2,
                                                  "action": {"status": 503}}]})
        resp = resumable_upload(DRIVE, data, "retried.sql.gz", num_retries=3,
                                media=KnownSizeUpload(data))
        emu.control("DELETE", "faults")
        expect(resp["md5Checksum"] == md5(data) and resp["size"] == str(len(data)), repr(resp))
        stored = emu.control("GET", "files/%s/content" % resp["id"])
        expect(stored == data, "stored content differs")
        chunks = [r for r in requests_log() if r["op"] == "upload_chunk"][-5:]
        expect([c["status"] for c in chunks] == [308, 503, 308, 308, 200],
               "statuses %r" % [c["status"] for c in chunks])

    @check("429 on files.list is retried by execute(num_retries=2)")
    def _():
        emu.control("POST", "faults", {"rules": [{"op": "list", "action": {"status": 429}}]})
        resp = DRIVE.files().list(pageSize=1).execute(num_retries=2)
        emu.control("DELETE", "faults")
        expect("files" in resp, repr(resp))
        lists = [r for r in requests_log() if r["op"] == "list"][-2:]
        expect([r["status"] for r in lists] == [429, 200], repr([r["status"] for r in lists]))

    @check("expired access token mid-run: 401 then AuthorizedHttp refreshes")
    def _():
        old = SA.token
        emu.control("POST", "faults", {"rules": [{"op": "list",
                                                  "action": {"expire_tokens": True}}]})
        resp = DRIVE.files().list(pageSize=1).execute()
        emu.control("DELETE", "faults")
        expect("files" in resp and SA.token != old, "token not refreshed")
        recent = requests_log()[-3:]
        expect([r["op"] for r in recent] == ["list", "token", "list"] and
               recent[0]["status"] == 401, repr([(r["op"], r["status"]) for r in recent]))

    @check("fileOrganizer may trash but not delete (403 insufficientFilePermissions)")
    def _():
        fid = multipart_upload(DRIVE, b"keep", "organizer-test.bin")["id"]
        fo = drive_for(sa_creds(FO_SA_EMAIL))
        expect_http_error(lambda: fo.files().delete(fileId=fid, supportsAllDrives=True)
                          .execute(), 403, "insufficientFilePermissions")
        caps = fo.files().get(fileId=fid, supportsAllDrives=True,
                              fields="capabilities(canDelete,canTrash)").execute()
        expect(caps["capabilities"] == {"canDelete": False, "canTrash": True}, repr(caps))
        res = fo.files().update(fileId=fid, body={"trashed": True}, supportsAllDrives=True,
                                fields="trashed,explicitlyTrashed").execute()
        expect(res == {"trashed": True, "explicitlyTrashed": True}, repr(res))

    @check("My Drive: writer adds and renames; only the owner trashes/deletes; trash cascades")
    def _():
        emu.control("POST", "authorized_users", {"client_id": "bob-client", "client_secret": "b",
                                                 "refresh_token": "1//bob", "email": BOB})
        bob = drive_for(user_credentials.Credentials(
            token=None, refresh_token="1//bob", client_id="bob-client", client_secret="b",
            token_uri=emu.url + "token"))
        alice = drive_for(person_creds())
        folder = emu.control("POST", "folders", {"name": "team", "owner": PERSON,
                                                 "permissions": {BOB: "writer"}})["id"]
        sub = alice.files().create(body={"name": "sub", "parents": [folder],
                                         "mimeType": "application/vnd.google-apps.folder"},
                                   fields="id").execute()["id"]
        mine = multipart_upload(alice, b"alice", "alice.bin", parent=sub)["id"]
        theirs = multipart_upload(bob, b"bob", "bob.bin", parent=sub)["id"]
        expect_http_error(lambda: bob.files().delete(fileId=mine).execute(), 403,
                          "insufficientFilePermissions")
        expect_http_error(lambda: bob.files().update(fileId=mine, body={"trashed": True})
                          .execute(), 403, "insufficientFilePermissions")
        renamed = bob.files().update(fileId=mine, body={"name": "renamed.bin"},
                                     fields="name").execute()
        expect(renamed == {"name": "renamed.bin"}, repr(renamed))
        expect_http_error(lambda: alice.files().delete(fileId=theirs).execute(), 403,
                          "insufficientFilePermissions")
        alice.files().update(fileId=sub, body={"trashed": True}).execute()
        child = alice.files().get(fileId=mine, fields="trashed,explicitlyTrashed").execute()
        expect(child == {"trashed": True, "explicitlyTrashed": False}, repr(child))
        alice.files().update(fileId=sub, body={"trashed": False}).execute()
        child = alice.files().get(fileId=mine, fields="trashed").execute()
        expect(child == {"trashed": False}, repr(child))
        alice.files().delete(fileId=mine).execute()
        expect_http_error(lambda: alice.files().get(fileId=mine).execute(), 404, "notFound")

    @check("files.update merges appProperties; null deletes a key")
    def _():
        fid = multipart_upload(DRIVE, b"p", "props.bin", app_properties={"a": "1", "b": "2"})["id"]
        res = DRIVE.files().update(fileId=fid, body={"appProperties": {"a": None, "c": "3"}},
                                   supportsAllDrives=True, fields="appProperties").execute()
        expect(res == {"appProperties": {"b": "2", "c": "3"}}, repr(res))

    @check("appProperties are private per Cloud project; properties are shared")
    def _():
        other = drive_for(sa_creds(OTHER_PROJECT_SA_EMAIL))
        same_project = drive_for(sa_creds(FO_SA_EMAIL))
        fid = multipart_upload(DRIVE, b"private", "private.bin",
                               app_properties={"pgdrive": "1", "who": "a"})["id"]
        DRIVE.files().update(fileId=fid, body={"properties": {"shared": "yes"}},
                             supportsAllDrives=True).execute()
        fields = "appProperties,properties"
        seen = other.files().get(fileId=fid, fields=fields, supportsAllDrives=True).execute()
        expect(seen == {"properties": {"shared": "yes"}}, "other project: %r" % seen)
        seen = same_project.files().get(fileId=fid, fields=fields,
                                        supportsAllDrives=True).execute()
        expect(seen.get("appProperties") == {"pgdrive": "1", "who": "a"},
               "another account of the same project: %r" % seen)

        def listed(drive, q):
            return [f["id"] for f in drive.files().list(
                q="'%s' in parents and %s" % (SD_FOLDER, q), corpora="drive",
                driveId=SHARED_DRIVE, includeItemsFromAllDrives=True, supportsAllDrives=True,
                fields="files(id)").execute()["files"]]
        mine = "appProperties has { key='pgdrive' and value='1' }"
        expect(fid in listed(DRIVE, mine), "the writer's own query")
        expect(fid not in listed(other, mine), "another project's appProperties query")
        expect(fid in listed(other, "properties has { key='shared' and value='yes' }"),
               "properties are public")
        res = other.files().update(fileId=fid, body={"appProperties": {"pgdrive": "2"}},
                                   supportsAllDrives=True, fields="appProperties").execute()
        expect(res == {"appProperties": {"pgdrive": "2"}}, "other project's own: %r" % res)
        expect(fid in listed(other, "appProperties has { key='pgdrive' and value='2' }"),
               "other project finds its own")
        res = DRIVE.files().get(fileId=fid, fields="appProperties",
                                supportsAllDrives=True).execute()
        expect(res == {"appProperties": {"pgdrive": "1", "who": "a"}}, "writer's: %r" % res)
        ctl = emu.control("GET", "files/" + fid)
        expect(ctl["emulatorAppProperties"] == {"pgdrive-test": {"pgdrive": "1", "who": "a"},
                                                "other-project": {"pgdrive": "2"}}, repr(ctl))

    @check("one user through two apps: the DWD account's project and an OAuth client's")
    def _():
        as_dwd = drive_for(service_account.Credentials.from_service_account_info(
            sa_info(DWD_SA_EMAIL), scopes=[DRIVE_SCOPE]).with_subject(PERSON))
        fid = multipart_upload(as_dwd, b"app", "apps.bin", parent=MY_FOLDER,
                               app_properties={"app": "dwd"})["id"]
        # the impersonated user's file carries the service account's project's appProperties:
        # another account of that project sees them, the same user through an OAuth client not
        seen = DRIVE.files().get(fileId=fid, fields="appProperties").execute()
        expect(seen == {"appProperties": {"app": "dwd"}}, "same project: %r" % seen)
        as_person = drive_for(person_creds())
        seen = as_person.files().get(fileId=fid, fields="appProperties,owners").execute()
        expect("appProperties" not in seen and seen["owners"][0]["emailAddress"] == PERSON,
               "the user through another app: %r" % seen)

    @check("at most 30 appProperties per app (and 30 properties) on a file")
    def _():
        thirty = {"k%02d" % i: "v" for i in range(30)}
        expect_http_error(lambda: multipart_upload(
            DRIVE, b"x", "many.bin", app_properties=dict(thirty, k30="v")), 400, "badRequest")
        fid = multipart_upload(DRIVE, b"x", "many.bin", app_properties=thirty)["id"]
        other = drive_for(sa_creds(OTHER_PROJECT_SA_EMAIL))
        other.files().update(fileId=fid, body={"appProperties": thirty},
                             supportsAllDrives=True).execute()  # the other app's own 30
        expect_http_error(lambda: DRIVE.files().update(
            fileId=fid, body={"properties": dict(thirty, k30="v")},
            supportsAllDrives=True).execute(), 400, "badRequest")

    @check("description: 25,000 characters are accepted, 25,001 are 400 (create and update)")
    def _():
        longest = "d" * 25000
        created = DRIVE.files().create(
            body={"name": "described.bin", "parents": [SD_FOLDER], "description": longest},
            supportsAllDrives=True, fields="id,description").execute()
        expect(created["description"] == longest, "stored description")
        fid = created["id"]
        err = expect_http_error(lambda: DRIVE.files().update(
            fileId=fid, body={"description": longest + "d"},
            supportsAllDrives=True).execute(), 400, "badRequest")
        expect("description" in str(err), str(err))
        # characters, not bytes: 25,000 two-byte ones fit
        DRIVE.files().create(body={"name": "accented.bin", "parents": [SD_FOLDER],
                                   "description": "é" * 25000},
                             supportsAllDrives=True).execute()
        expect_http_error(lambda: DRIVE.files().create(
            body={"name": "too-long.bin", "parents": [SD_FOLDER], "description": "é" * 25001},
            supportsAllDrives=True).execute(), 400, "badRequest")
        got = DRIVE.files().get(fileId=fid, fields="description",
                                supportsAllDrives=True).execute()
        expect(got == {"description": longest}, "a refused update changed nothing")
        names = [f["name"] for f in emu.control("GET", "files")["files"]]
        expect("too-long.bin" not in names, "a refused create left a file")

    @check("upload_bytes_per_second paces upload bodies, one rate shared by all uploads")
    def _():
        rate = 512 * KIB
        emu.control("POST", "config", {"upload_bytes_per_second": rate})
        try:
            started = time.monotonic()
            resumable_upload(DRIVE, payload(3 * CHUNK, "slow"), "slow.bin")
            alone = time.monotonic() - started
            expect(alone >= 3 * CHUNK / rate * 0.95, "768 KiB at 512 KiB/s took %.2f s" % alone)
            # two at once share the link: together as long as one of twice the size
            done = []

            def upload(i):
                resumable_upload(drive_for(sa_creds()), payload(int(1.5 * CHUNK), "p%d" % i),
                                 "parallel%d.bin" % i)
                done.append(i)
            threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            both = time.monotonic() - started
            expect(sorted(done) == [0, 1], "parallel uploads finished: %r" % done)
            expect(both >= 3 * CHUNK / rate * 0.95, "2 x 384 KiB took %.2f s" % both)
        finally:
            emu.control("POST", "config", {"upload_bytes_per_second": None})
        started = time.monotonic()
        resumable_upload(DRIVE, payload(3 * CHUNK, "fast"), "fast.bin")
        fast = time.monotonic() - started
        expect(fast < alone / 2, "unthrottled %.2f s vs throttled %.2f s" % (fast, alone))
        try:
            emu.control("POST", "config", {"upload_bytes_per_second": 0})
        except urllib.error.HTTPError as exc:
            expect(exc.code == 400, "a rate of 0: %d" % exc.code)
        else:
            raise AssertionError("a rate of 0 was accepted")

    @check("session DELETE -> 499, then the session is 404")
    def _():
        data = payload(3 * CHUNK, "cancel")
        media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/gzip",
                                  chunksize=CHUNK, resumable=True)
        request = DRIVE.files().create(body={"name": "cancelled.bin", "parents": [SD_FOLDER]},
                                       media_body=media, supportsAllDrives=True)
        request.next_chunk()
        http = build_http()
        resp, _ = http.request(request.resumable_uri, "DELETE", headers={"Content-Length": "0"})
        expect(resp.status == 499, "cancel status %d" % resp.status)
        resp, content = http.request(request.resumable_uri, "PUT",
                                     headers={"Content-Range": "bytes */*",
                                              "Content-Length": "0"})
        expect(resp.status == 404 and json.loads(content)["error"]["errors"][0]["reason"]
               == "notFound", "after cancel: %d" % resp.status)
        expect_http_error(lambda: request.next_chunk(), 404, "notFound")
        names = [f["name"] for f in emu.control("GET", "files")["files"]]
        expect("cancelled.bin" not in names, "a cancelled upload left a file")

    # =========================================================================
    # Part 2: raw protocol (http.client)
    # =========================================================================

    TOKEN = SA.token if SA.valid else (SA.refresh(auth_request()) or SA.token)
    AUTH = {"Authorization": "Bearer " + TOKEN}

    def initiate(meta=None, path="/upload/drive/v3/files", extra_headers=None,
                 query="uploadType=resumable&supportsAllDrives=true&fields=id,size,md5Checksum"):
        body = json.dumps(meta or {"name": "raw.bin", "parents": [SD_FOLDER]}).encode()
        headers = dict(AUTH, **{"Content-Type": "application/json; charset=UTF-8",
                                "X-Upload-Content-Type": "application/octet-stream"})
        headers.update(extra_headers or {})
        status, hdrs, data = raw(emu, "POST", path + "?" + query, body, headers)
        expect(status == 200 and data == b"" and "location" in hdrs,
               "initiation: %d %r" % (status, data[:200]))
        loc = urlsplit(hdrs["location"])
        return loc.path + "?" + loc.query

    def put(uri, body, content_range, method="PUT", headers=None, conn=None):
        hdrs = {"Content-Length": str(len(body))}
        if content_range is not None:
            hdrs["Content-Range"] = content_range
        hdrs.update(headers or {})
        return raw(emu, method, uri, body, hdrs, conn=conn)

    @check("raw: initiation answers 200, empty body, Location with upload_id")
    def _():
        uri = initiate()
        expect("uploadType=resumable" in uri and "upload_id=" in uri, uri)
        expect(uri.startswith("/upload/drive/v3/files?"), uri)

    @check("raw: fresh session status query (bytes */*) -> 308 without Range")
    def _():
        uri = initiate()
        status, hdrs, data = put(uri, b"", "bytes */*")
        expect(status == 308 and "range" not in hdrs and data == b"",
               "%d %r" % (status, hdrs.get("range")))
        expect(hdrs.get("content-length") == "0", "Content-Length %r" % hdrs.get("content-length"))

    @check("raw: non-multiple chunk keeps the largest 256 KiB multiple (Range bytes=0-262143)")
    def _():
        uri = initiate()
        data = payload(300_000, "partial")
        status, hdrs, _ = put(uri, data, "bytes 0-299999/*")
        expect(status == 308 and hdrs.get("range") == "bytes=0-262143", "%d %r"
               % (status, hdrs.get("range")))
        status, hdrs, _ = put(uri, b"", "bytes */*")
        expect(status == 308 and hdrs.get("range") == "bytes=0-262143", "status query %r"
               % hdrs.get("range"))
        # Resend from the acknowledged offset: the overlap rule and the final chunk.
        status, hdrs, body = put(uri, data[CHUNK:], "bytes 262144-299999/300000")
        doc = json.loads(body)
        expect(status == 200 and doc["md5Checksum"] == md5(data) and doc["size"] == "300000",
               "%d %r" % (status, body[:200]))

    @check("raw: a small non-final chunk -> 400 with Google's 262144 message")
    def _():
        uri = initiate()
        status, _, body = put(uri, b"z" * 100, "bytes 0-99/*")
        msg = json.loads(body)["error"]["message"]
        expect(status == 400 and "The received request contained 100 bytes" in msg, msg)

    @check("raw: overlap is skipped, a gap is 400, POST works like PUT")
    def _():
        uri = initiate()
        data = payload(3 * CHUNK, "overlap")
        put(uri, data[:CHUNK], "bytes 0-262143/*", method="POST")
        status, hdrs, _ = put(uri, data[:2 * CHUNK], "bytes 0-524287/*", method="POST")
        expect(status == 308 and hdrs.get("range") == "bytes=0-524287", hdrs.get("range"))
        status, _, _ = put(uri, data[2 * CHUNK + CHUNK // 2:], "bytes 655360-786431/786432")
        expect(status == 400, "gap accepted: %d" % status)
        status, _, body = put(uri, data[2 * CHUNK:], "bytes 524288-786431/786432")
        expect(status == 200 and json.loads(body)["md5Checksum"] == md5(data), body[:200])

    @check("raw: finalize with an empty `bytes */N` request")
    def _():
        uri = initiate()
        data = payload(CHUNK, "finalize")
        put(uri, data, "bytes 0-262143/*")
        status, _, body = put(uri, b"", "bytes */262144")
        expect(status == 200 and json.loads(body)["size"] == str(CHUNK), "%d" % status)

    @check("raw: persist_partial fault stores only part of a chunk")
    def _():
        uri = initiate()
        data = payload(3 * CHUNK, "persist")
        emu.control("POST", "faults", {"rules": [{"op": "upload_chunk",
                                                  "action": {"persist_partial": CHUNK}}]})
        status, hdrs, _ = put(uri, data[:2 * CHUNK], "bytes 0-524287/*")
        emu.control("DELETE", "faults")
        expect(status == 308 and hdrs.get("range") == "bytes=0-262143", hdrs.get("range"))
        status, _, body = put(uri, data[CHUNK:], "bytes 262144-786431/786432")
        expect(status == 200 and json.loads(body)["md5Checksum"] == md5(data), body[:200])

    @check("raw: drop-after on the final chunk; status query then returns the file")
    def _():
        uri = initiate()
        data = payload(CHUNK + 5, "dropafter")
        put(uri, data[:CHUNK], "bytes 0-262143/*")
        emu.control("POST", "faults", {"rules": [{"op": "upload_chunk",
                                                  "action": {"drop": "after"}}]})
        try:
            put(uri, data[CHUNK:], "bytes 262144-262148/262149")
        except (http.client.RemoteDisconnected, ConnectionError):
            pass
        else:
            raise AssertionError("connection was not dropped")
        finally:
            emu.control("DELETE", "faults")
        status, _, body = put(uri, b"", "bytes */*")
        expect(status == 200 and json.loads(body)["md5Checksum"] == md5(data),
               "%d %r" % (status, body[:100]))

    @check("raw: drop-before stores nothing")
    def _():
        uri = initiate()
        emu.control("POST", "faults", {"rules": [{"op": "upload_chunk",
                                                  "action": {"drop": "before"}}]})
        try:
            put(uri, payload(CHUNK, "db"), "bytes 0-262143/*")
        except (http.client.RemoteDisconnected, ConnectionError):
            pass
        else:
            raise AssertionError("connection was not dropped")
        finally:
            emu.control("DELETE", "faults")
        status, hdrs, _ = put(uri, b"", "bytes */*")
        expect(status == 308 and "range" not in hdrs, repr(hdrs.get("range")))

    @check("raw: expired session -> 404 notFound")
    def _():
        uri = initiate()
        emu.control("POST", "sessions/expire")
        status, _, body = put(uri, b"", "bytes */*")
        expect(status == 404 and json.loads(body)["error"]["errors"][0]["reason"] == "notFound",
               "%d" % status)
        states = {s["state"] for s in emu.control("GET", "sessions")["sessions"]}
        expect("expired" in states, repr(states))

    @check("raw: X-GUploader-No-308 -> 200 + X-HTTP-Status-Code-Override: 308")
    def _():
        uri = initiate()
        status, hdrs, _ = put(uri, payload(CHUNK, "no308"), "bytes 0-262143/*",
                              headers={"X-GUploader-No-308": "yes"})
        expect(status == 200 and hdrs.get("x-http-status-code-override") == "308"
               and hdrs.get("range") == "bytes=0-262143", "%d %r" % (status, hdrs))

    @check("raw: /resumable/upload path, chunked request body, no Authorization on chunks")
    def _():
        uri = initiate(path="/resumable/upload/drive/v3/files")
        data = payload(CHUNK + 10, "chunked")
        c = emu.conn()
        c.putrequest("PUT", uri)
        c.putheader("Content-Range", "bytes 0-%d/%d" % (len(data) - 1, len(data)))
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for i in range(0, len(data), 100_000):
            piece = data[i:i + 100_000]
            c.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        c.send(b"0\r\n\r\n")
        resp = c.getresponse()
        body = resp.read()
        c.close()
        expect(resp.status == 200 and json.loads(body)["md5Checksum"] == md5(data),
               "%d %r" % (resp.status, body[:200]))

    @check("raw: invalid token on a session request -> 401; X-Upload-Content-Length enforced")
    def _():
        uri = initiate(extra_headers={"X-Upload-Content-Length": "300000"})
        status, _, body = put(uri, b"", "bytes */*", headers={"Authorization": "Bearer ya29.no"})
        expect(status == 401 and json.loads(body)["error"]["errors"][0]["reason"] == "authError",
               "%d" % status)
        status, _, _ = put(uri, payload(CHUNK, "x"), "bytes 0-262143/262144")
        expect(status == 400, "total mismatch accepted: %d" % status)

    @check("raw: Drive 401 shape for a missing token")
    def _():
        status, hdrs, body = raw(emu, "GET", "/drive/v3/files")
        err = json.loads(body)["error"]
        expect(status == 401 and err["errors"][0] == {
            "message": "Invalid Credentials", "domain": "global", "reason": "authError",
            "location": "Authorization", "locationType": "header"}, repr(err))

    @check("raw: Range downloads (206 + Content-Range, 416 bytes */size), mid_body drop")
    def _():
        fid = [f for f in emu.control("GET", "files")["files"]
               if f["name"] == "download.sql.gz"][0]["id"]
        path = "/drive/v3/files/%s?alt=media&supportsAllDrives=true" % fid
        status, hdrs, body = raw(emu, "GET", path, headers=dict(AUTH, Range="bytes=10-19"))
        expect(status == 206 and body == KNOWN[10:20] and
               hdrs.get("content-range") == "bytes 10-19/%d" % len(KNOWN), repr(hdrs))
        status, hdrs, _ = raw(emu, "GET", path, headers=dict(AUTH, Range="bytes=%d-" % len(KNOWN)))
        expect(status == 416 and hdrs.get("content-range") == "bytes */%d" % len(KNOWN),
               "%d %r" % (status, hdrs.get("content-range")))
        emu.control("POST", "faults", {"rules": [{"op": "get_media",
                                                  "action": {"drop": "mid_body"}}]})
        try:
            raw(emu, "GET", path, headers=AUTH)
        except http.client.IncompleteRead:
            pass
        else:
            raise AssertionError("full body received")
        finally:
            emu.control("DELETE", "faults")

    @check("raw: fault rules count nth/times per op; OAuth-shaped token faults")
    def _():
        emu.control("POST", "faults", {"rules": [
            {"op": "about", "nth": 2, "times": 2, "action": {"status": 500}},
            {"op": "token", "action": {"status": 400, "error": "invalid_grant",
                                       "error_description": "Token has been expired or revoked."}}]})
        statuses = [raw(emu, "GET", "/drive/v3/about?fields=kind", headers=AUTH)[0]
                    for _ in range(4)]
        status, _, body = raw(emu, "POST", "/token", b"grant_type=refresh_token",
                              {"Content-Type": "application/x-www-form-urlencoded"})
        rules = emu.control("GET", "faults")["rules"]
        emu.control("DELETE", "faults")
        expect(statuses == [200, 500, 500, 200], repr(statuses))
        expect(status == 400 and json.loads(body) == {
            "error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            body)
        expect([(r["seen"], r["fired"]) for r in rules] == [(4, 2), (1, 1)], repr(rules))

    @check("raw: hang_ms fault lets a client time out")
    def _():
        emu.control("POST", "faults", {"rules": [{"op": "about", "action": {"hang_ms": 1500}}]})
        start = time.time()
        try:
            raw(emu, "GET", "/drive/v3/about?fields=user", headers=AUTH,
                conn=emu.conn(timeout=0.5))
        except (socket.timeout, TimeoutError):
            pass
        else:
            raise AssertionError("no timeout")
        finally:
            emu.control("DELETE", "faults")
        expect(time.time() - start < 1.4, "timed out too late")

    @check("raw: corrupt endpoint and corrupt_md5 fault")
    def _():
        data = payload(1000, "rot")
        fid = multipart_upload(DRIVE, data, "rot.bin")["id"]
        emu.control("POST", "files/%s/corrupt" % fid, {"offset": 7})
        stored = emu.control("GET", "files/%s/content" % fid)
        meta = DRIVE.files().get(fileId=fid, fields="md5Checksum", supportsAllDrives=True).execute()
        expect(stored != data and md5(stored) != meta["md5Checksum"] == md5(data), "bit rot")
        emu.control("POST", "faults", {"rules": [{"op": "upload_chunk",
                                                  "action": {"corrupt_md5": True}}]})
        resp = resumable_upload(DRIVE, data, "badmd5.bin")
        emu.control("DELETE", "faults")
        expect(resp["md5Checksum"] != md5(data), "md5 not corrupted")
        stored = emu.control("GET", "files/%s/content" % resp["id"])
        expect(stored == data, "content must be intact")

    @check("raw: q grammar errors -> 400 invalid/q; pageToken garbage -> 400")
    def _():
        for bad in ("name = ", "'x' in", "name == 'a'", "foo = 'x'", "(trashed = true",
                    "name contains 'a' and"):
            status, _, body = raw(emu, "GET", "/drive/v3/files?q=" +
                                  urllib.request.quote(bad), headers=AUTH)
            err = json.loads(body)["error"]["errors"][0]
            expect(status == 400 and err["reason"] == "invalid" and err["location"] == "q",
                   "%r -> %d %r" % (bad, status, err))
        status, _, _ = raw(emu, "GET", "/drive/v3/files?pageToken=nonsense", headers=AUTH)
        expect(status == 400, "pageToken %d" % status)

    @check("raw: q semantics (name prefix, not, or, escapes, dates, mimeType)")
    def _():
        def names(q):
            path = ("/drive/v3/files?supportsAllDrives=true&includeItemsFromAllDrives=true"
                    "&pageSize=1000&fields=files(name)&q=" + urllib.request.quote(q))
            status, _, body = raw(emu, "GET", path, headers=AUTH)
            expect(status == 200, "%r -> %d %s" % (q, status, body[:200]))
            return sorted(f["name"] for f in json.loads(body)["files"])
        base = "'%s' in parents" % LIST_FOLDER
        expect(names(base + " and name contains 'db-'") ==
               ["db-0.sql.gz", "db-1.sql.gz", "db-2.sql.gz", "db-3.sql.gz", "db-4.sql.gz"],
               "prefix")
        expect(names(base + " and name contains 'sql'") == [], "contains must be a prefix match")
        expect(names(base + " and not name contains 'db-'") == ["foreign.txt", "trashed.sql.gz"],
               "not")
        expect(names(base + " and (name = 'db-0.sql.gz' or name = 'foreign.txt')") ==
               ["db-0.sql.gz", "foreign.txt"], "or")
        expect(names(base + " and trashed != false") == ["trashed.sql.gz"], "trashed !=")
        expect(names(base + " and createdTime > '2000-01-01T00:00:00'") != [], "date >")
        expect(names(base + " and modifiedTime < '2000-01-01T00:00:00Z'") == [], "date <")
        expect(names("mimeType = 'application/vnd.google-apps.folder' and name = 'listing'") ==
               ["listing"], "mimeType")
        emu.control("POST", "files", {"name": "quinn's paper\\essay", "parents": [LIST_FOLDER]})
        expect(names(base + " and name = 'quinn\\'s paper\\\\essay'") ==
               ["quinn's paper\\essay"], "escapes")

    @check("raw: token endpoint errors (unknown iss, bad signature, bad times)")
    def _():
        signer = crypt.RSASigner.from_string(PRIVATE_PEM, "kid")
        now = int(time.time())

        def grant(claims, key_signer=signer):
            assertion = google_jwt.encode(key_signer, claims).decode()
            body = ("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                    "&assertion=" + assertion).encode()
            status, _, data = raw(emu, "POST", "/token", body,
                                  {"Content-Type": "application/x-www-form-urlencoded"})
            return status, json.loads(data)

        good = {"iss": SA_EMAIL, "scope": DRIVE_SCOPE, "aud": emu.url + "token",
                "iat": now, "exp": now + 3600}
        status, doc = grant(good)
        expect(status == 200 and doc["token_type"] == "Bearer" and doc["expires_in"] == 3599
               and doc["access_token"].startswith("ya29."), repr(doc))
        status, doc = grant(dict(good, iss="nobody@x.iam.gserviceaccount.com"))
        expect(status == 400 and doc == {"error": "invalid_grant",
                                         "error_description": "Invalid grant: account not found"},
               repr(doc))
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_pem = other.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        status, doc = grant(good, crypt.RSASigner.from_string(other_pem))
        expect(status == 400 and doc["error_description"] == "Invalid JWT Signature.", repr(doc))
        status, doc = grant(dict(good, iat=now - 7200, exp=now - 3600))
        expect(status == 400 and doc["error"] == "invalid_grant" and
               doc["error_description"].startswith("Invalid JWT: Token must be a short-lived"),
               repr(doc))
        status, doc = grant(dict(good, exp=now + 7200))
        expect(status == 400 and doc["error"] == "invalid_grant", "2h token accepted")

    @check("raw: SendGrid mail send (202, 401, 400) and the mail log")
    def _():
        msg = {"personalizations": [{"to": [{"email": "ops@example.com"}]}],
               "from": {"email": "pgdrive@example.com"}, "subject": "backup failed",
               "content": [{"type": "text/plain", "value": "details"}]}
        hdrs = {"Authorization": "Bearer " + SENDGRID_KEY, "Content-Type": "application/json"}
        status, rh, body = raw(emu, "POST", "/v3/mail/send", json.dumps(msg).encode(), hdrs)
        expect(status == 202 and body == b"" and rh.get("x-message-id"), "%d" % status)
        status, _, body = raw(emu, "POST", "/v3/mail/send", json.dumps(msg).encode(),
                              dict(hdrs, Authorization="Bearer SG.wrong"))
        expect(status == 401 and json.loads(body) == {"errors": [{
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "field": None, "help": None}]}, body)
        bad = dict(msg, content=[])
        del bad["subject"]
        status, _, body = raw(emu, "POST", "/v3/mail/send", json.dumps(bad).encode(), hdrs)
        fields = sorted(e["field"] for e in json.loads(body)["errors"])
        expect(status == 400 and fields == ["content", "subject"], repr(fields))
        mail = emu.control("GET", "mail")["messages"]
        expect(len(mail) == 1 and mail[0]["subject"] == "backup failed" and
               "received_at" in mail[0], repr(mail))

    @check("folder shared out of a shared drive: corpora=drive 404, allDrives by parent lists")
    def _():
        outsider = "pgdrive-outsider@pgdrive-test.iam.gserviceaccount.com"
        emu.control("POST", "service_accounts", {"client_email": outsider,
                                                 "public_key_pem": PUBLIC_PEM})
        folder = emu.control("POST", "folders", {"name": "shared-only", "drive_id": SHARED_DRIVE,
                                                 "permissions": {outsider: "writer"}})["id"]
        drive = drive_for(sa_creds(outsider))
        fid = multipart_upload(drive, b"outsider", "outsider.bin", parent=folder)["id"]
        q = "'%s' in parents and trashed = false" % folder
        expect_http_error(lambda: drive.files().list(
            q=q, corpora="drive", driveId=SHARED_DRIVE, supportsAllDrives=True,
            includeItemsFromAllDrives=True).execute(), 404, "notFound")
        listed = drive.files().list(q=q, corpora="allDrives", supportsAllDrives=True,
                                    includeItemsFromAllDrives=True).execute()["files"]
        expect([f["id"] for f in listed] == [fid], repr(listed))

    @check("abusive file: 403 cannotDownloadAbusiveFile; acknowledgeAbuse for organizers only")
    def _():
        fid = multipart_upload(DRIVE, b"flagged", "flagged.bin")["id"]
        emu.control("POST", "files/%s/abusive" % fid, {})
        expect_http_error(lambda: DRIVE.files().get_media(
            fileId=fid, supportsAllDrives=True).execute(), 403, "cannotDownloadAbusiveFile")
        got = DRIVE.files().get_media(fileId=fid, supportsAllDrives=True,
                                      acknowledgeAbuse=True).execute()
        expect(got == b"flagged", repr(got))
        fo = drive_for(sa_creds(FO_SA_EMAIL))
        expect_http_error(lambda: fo.files().get_media(
            fileId=fid, supportsAllDrives=True, acknowledgeAbuse=True).execute(),
            403, "cannotDownloadAbusiveFile")

    @check("user credentials of a project without the Drive API: quota project header honoured")
    def _():
        emu.control("POST", "authorized_users", {
            "client_id": "gcloud-" + CLIENT_ID, "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN, "email": BOB, "client_project_disabled": True})
        creds = user_credentials.Credentials(
            token=None, refresh_token=REFRESH_TOKEN, client_id="gcloud-" + CLIENT_ID,
            client_secret=CLIENT_SECRET, token_uri=emu.url + "token")
        expect_http_error(lambda: drive_for(creds).about().get(fields="user").execute(),
                          403, "accessNotConfigured")
        about = drive_for(creds.with_quota_project("my-project")).about().get(
            fields="user").execute()
        expect(about["user"]["emailAddress"] == BOB, repr(about))

    @check("raw: request log records ops and never token values")
    def _():
        log = requests_log()
        dump = json.dumps(log)
        expect(TOKEN not in dump and SENDGRID_KEY not in dump and PRIVATE_PEM[40:80] not in dump,
               "secret leaked into the request log")
        ops = {r["op"] for r in log}
        expect({"token", "upload_initiate", "upload_chunk", "upload_status", "upload_cancel",
                "list", "get", "get_media", "create", "update", "delete", "about",
                "mail_send"} <= ops, "ops seen: %r" % sorted(ops))
        entry = log[-1]
        for key in ("seq", "method", "path", "query", "op", "content_range", "content_length",
                    "body_len", "has_authorization", "status", "fault", "ts"):
            expect(key in entry, "missing %s" % key)

finally:
    emu.stop()

passed = sum(RESULTS)
failed = len(RESULTS) - passed
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
