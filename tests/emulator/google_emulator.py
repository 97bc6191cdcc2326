#!/usr/bin/env python3
"""Local emulator of the Google services pgdrive talks to.

Emulated over plain HTTP on a loopback port:

* Google's OAuth 2.0 token endpoint (``POST /token``): the service-account
  JWT-bearer grant (with optional domain-wide delegation through ``sub``) and
  the refresh-token grant of an installed-app ("authorized user") client.
* The Google Drive v3 REST API (``/drive/v3/...``): files.list / get /
  create / update / delete / emptyTrash and about.get, with Drive's search
  language, ``fields`` masks, paging, shared drives, a small but real
  permission model, and appProperties private to the Google Cloud project of
  the caller's credentials.
* Drive's media upload front end (``/upload/drive/v3/...`` and
  ``/resumable/upload/drive/v3/...``): resumable sessions (308 Resume
  Incomplete, ``Range``, status queries, 256 KiB granularity, cancel),
  multipart/related and simple media uploads.
* SendGrid's v3 mail-send endpoint (``POST /v3/mail/send``).
* A control API under ``/__emulator/`` (not Google) for test set-up,
  fault injection, inspection and a request log.

Usage::

    python3 google_emulator.py [--host 127.0.0.1] [--port 0] [--port-file P]
                               [--discard-content] [--verbose]

It prints exactly one line, ``LISTENING http://HOST:PORT/``, once the socket
is bound, then serves until SIGTERM/SIGINT.

Only the standard library and ``cryptography`` (for RS256 verification) are
used.  Each section names the public Google/SendGrid document whose
behaviour it reproduces; see also tests/emulator/README.md.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# =============================================================================
# 1. Constants and the public documents they come from
# =============================================================================

DRIVE_GUIDES = "https://developers.google.com/workspace/drive/api/guides/"
DOC_MANAGE_UPLOADS = DRIVE_GUIDES + "manage-uploads"
DOC_MANAGE_DOWNLOADS = DRIVE_GUIDES + "manage-downloads"
DOC_HANDLE_ERRORS = DRIVE_GUIDES + "handle-errors"
DOC_SEARCH_FILES = DRIVE_GUIDES + "search-files"
DOC_SEARCH_TERMS = DRIVE_GUIDES + "ref-search-terms"
DOC_FIELDS = DRIVE_GUIDES + "fields-parameter"
DOC_SHARED_DRIVES = DRIVE_GUIDES + "about-shareddrives"
DOC_ENABLE_SHARED_DRIVES = DRIVE_GUIDES + "enable-shareddrives"
DOC_DELETE = DRIVE_GUIDES + "delete"
DOC_CREATE_FILE = DRIVE_GUIDES + "create-file"
DOC_PROPERTIES = DRIVE_GUIDES + "properties"
DOC_FILES_REF = "https://developers.google.com/workspace/drive/api/reference/rest/v3/files"
DOC_ABOUT_REF = "https://developers.google.com/workspace/drive/api/reference/rest/v3/about"
DOC_OAUTH_SA = "https://developers.google.com/identity/protocols/oauth2/service-account"
DOC_OAUTH_REFRESH = "https://developers.google.com/identity/protocols/oauth2/web-server#offline"
DOC_GCS_RESUMABLE = "https://cloud.google.com/storage/docs/performing-resumable-uploads"
DOC_SENDGRID_SEND = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send"
DOC_SENDGRID_ERRORS = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
# Older key files carry these token URIs; Google still accepts them as `aud`.
LEGACY_TOKEN_URIS = (
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
)
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

FOLDER_MIME = "application/vnd.google-apps.folder"
GOOGLE_APPS_PREFIX = "application/vnd.google-apps."
DEFAULT_MIME = "application/octet-stream"

# Resumable uploads: every non-final chunk must be a multiple of 256 KiB.
UPLOAD_GRANULARITY = 256 * 1024
MAX_UPLOAD_SIZE = 5497558138880  # files.create mediaUpload.maxSize in discovery
MAX_PROPERTY_BYTES = 124  # key + value, UTF-8 (DOC_PROPERTIES)
# DOC_PROPERTIES: at most 30 public properties, 30 private ones per app, 100 in all per file.
MAX_PUBLIC_PROPERTIES = 30
MAX_APP_PROPERTIES_PER_APP = 30
MAX_PROPERTIES_PER_FILE = 100
# [UNCONFIRMED] Neither the Drive v3 reference nor drive-api.md gives a maximum for
# `description`; 25,000 characters is the limit the Drive web UI is documented to enforce,
# taken as the API's too.
MAX_DESCRIPTION_CHARS = 25000
# appProperties set through the control API without a `project`: a fixture every Cloud project
# sees until it writes its own (Drive itself has no such set).
ANY_PROJECT = "*"
MAX_PAGE_CURSORS = 10000  # live nextPageToken values kept by files.list

SMALL_CHUNK_MESSAGE = (
    "Invalid request. The number of bytes uploaded is required to be equal or "
    "greater than 262144, except for the final request (it's recommended to be "
    "the exact multiple of 262144). The received request contained {n} bytes, "
    "which does not meet this requirement."
)
SA_NO_QUOTA_MESSAGE = (
    "Service Accounts do not have storage quota. Leverage shared drives "
    "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives), "
    "or use OAuth delegation (http://support.google.com/a/answer/7281227) instead."
)
BAD_JWT_TIME_MESSAGE = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
    "reasonable timeframe. Check your iat and exp values in the JWT claim."
)
DWD_REFUSED_MESSAGE = (
    "Client is unauthorized to retrieve access tokens using this method, or "
    "client not authorized for any of the scopes requested."
)

# OAuth scopes accepted per Drive method (copied from the discovery document's
# `scopes` lists for each method).
_S = "https://www.googleapis.com/auth/"
READ_SCOPES = frozenset(_S + s for s in (
    "drive", "drive.appdata", "drive.file", "drive.meet.readonly", "drive.metadata",
    "drive.metadata.readonly", "drive.photos.readonly", "drive.readonly"))
WRITE_SCOPES = frozenset(_S + s for s in ("drive", "drive.appdata", "drive.file"))
UPDATE_SCOPES = frozenset(_S + s for s in (
    "drive", "drive.appdata", "drive.file", "drive.metadata", "drive.scripts"))
EMPTY_TRASH_SCOPES = frozenset({_S + "drive"})

# Role ladders.  My Drive: reader < commenter < writer < owner.  Shared drives
# (DOC_SHARED_DRIVES): reader < commenter < writer (Contributor) <
# fileOrganizer (Content manager) < organizer (Manager).
ROLE_RANK = {"reader": 1, "commenter": 2, "writer": 3, "fileOrganizer": 4,
             "organizer": 5, "owner": 5}
SHARED_DRIVE_ROLES = ("reader", "commenter", "writer", "fileOrganizer", "organizer")
MY_DRIVE_ROLES = ("reader", "commenter", "writer", "owner")
# Sharing an item inside a shared drive (with members or non-members) grants up to
# Content manager; Manager is a drive-level membership only
# (https://developers.google.com/workspace/drive/api/guides/ref-roles).
SHARED_FOLDER_ROLES = ("reader", "commenter", "writer", "fileOrganizer")

DEFAULT_CONFIG = {
    "token_lifetime_seconds": 3599,
    "about_limit_bytes": "16106127360",  # 15 GiB; null = unlimited
    "session_lifetime_seconds": 7 * 24 * 3600,  # a week, per DOC_MANAGE_UPLOADS
    # md5Checksum's letter case is not documented: clients must compare hex case-insensitively
    "md5_uppercase": False,
    # the token server's clock relative to the host's (negative: behind), and how far in its
    # future a JWT's iat may be; Google documents no leeway
    "clock_offset_seconds": 0,
    "jwt_iat_leeway_seconds": 300,
    # bytes per second at which upload request bodies are read, shared by every upload at once
    # (one slow uplink); null = as fast as the socket delivers
    "upload_bytes_per_second": None,
}

ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


# =============================================================================
# 2. Small helpers: time, identifiers, JSON
# =============================================================================

def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339(ms: int) -> str:
    """Format epoch milliseconds the way Drive does: UTC with milliseconds."""
    secs, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%03dZ" % milli


_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?)?"
    r"\s*([Zz]|[+-]\d{2}:?\d{2})?$")


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 date-time (or a bare date) into epoch milliseconds.

    Drive's search terms default to UTC when no offset is given (DOC_SEARCH_TERMS).
    Raises ValueError on anything else.
    """
    m = _RFC3339_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    secs = calendar.timegm((int(year), int(month), int(day), int(hh or 0),
                            int(mm or 0), int(ss or 0), 0, 0, 0))
    millis = int(round(float(frac) * 1000)) if frac else 0
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        secs -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return secs * 1000 + millis


def random_id(length: int) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def new_file_id() -> str:
    """33 characters from Drive's ID alphabet, starting with '1' like real IDs."""
    return "1" + random_id(32)


def new_drive_id() -> str:
    """Shared drive IDs look like '0A' followed by letters and digits (19 chars)."""
    return "0A" + "".join(secrets.choice(ID_ALPHABET[:62]) for _ in range(17))


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def permission_id_for(email: str) -> str:
    """A stable numeric permission ID per e-mail address."""
    digest = hashlib.sha256(email.lower().encode()).hexdigest()
    return str(int(digest[:16], 16)).rjust(20, "0")[:20]


# =============================================================================
# 3. Error types (Google JSON errors, OAuth errors, SendGrid errors)
# =============================================================================

class HttpResponse:
    """A fully formed HTTP response waiting to be written."""

    __slots__ = ("status", "headers", "body", "reason_phrase")

    def __init__(self, status: int, body: bytes = b"", headers=None, reason_phrase=None):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.reason_phrase = reason_phrase

    def header(self, name: str):
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def json_response(status: int, obj, headers=None, pretty=True) -> HttpResponse:
    text = json.dumps(obj, indent=2 if pretty else None, ensure_ascii=False)
    hdrs = [("Content-Type", "application/json; charset=UTF-8")] + list(headers or [])
    return HttpResponse(status, (text + ("\n" if pretty else "")).encode("utf-8"), hdrs)


# Domains for reasons that Google files under usageLimits (DOC_HANDLE_ERRORS).
USAGE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded",
                       "quotaExceeded"}

DEFAULT_ERROR_FOR_STATUS = {
    400: ("badRequest", "Bad Request"),
    401: ("authError", "Invalid Credentials"),
    403: ("forbidden", "Forbidden"),
    404: ("notFound", "Not Found"),
    408: ("requestTimeout", "Request Timeout"),
    409: ("conflict", "Conflict"),
    410: ("gone", "Gone"),
    429: ("rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("backendError", "Backend Error"),
    502: ("badGateway", "Bad Gateway"),
    503: ("backendError", "Service Unavailable"),
    504: ("backendError", "Gateway Timeout"),
}


class ApiError(Exception):
    """A Google JSON API error (DOC_HANDLE_ERRORS).

    Rendered as ``{"error": {"code", "message", "errors": [{"domain",
    "reason", "message", "location"?, "locationType"?}], "status"?}}`` --
    the shape google-api-python-client reads ``error.message`` and
    ``errors[0].reason`` from.
    """

    def __init__(self, code, reason, message, domain=None, location=None,
                 location_type=None, status=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain or ("usageLimits" if reason in USAGE_LIMIT_REASONS else "global")
        self.location = location
        self.location_type = location_type
        self.status = status
        self.headers = list(headers or [])

    def body(self) -> dict:
        item = {"message": self.message, "domain": self.domain, "reason": self.reason}
        if self.location is not None:
            item["location"] = self.location
            item["locationType"] = self.location_type or "parameter"
        err = {"code": self.code, "message": self.message, "errors": [item]}
        if self.status:
            err["status"] = self.status
        return {"error": err}

    def response(self, pretty=True) -> HttpResponse:
        return json_response(self.code, self.body(), self.headers, pretty)


def not_found(file_id: str) -> ApiError:
    return ApiError(404, "notFound", "File not found: %s." % file_id,
                    location="fileId", location_type="parameter")


def insufficient_permissions(file_id: str) -> ApiError:
    return ApiError(403, "insufficientFilePermissions",
                    "The user does not have sufficient permissions for file %s." % file_id)


def invalid_parameter(location: str, message="Invalid Value", reason="invalid") -> ApiError:
    return ApiError(400, reason, message, location=location, location_type="parameter")


def auth_error() -> ApiError:
    return ApiError(401, "authError", "Invalid Credentials", location="Authorization",
                    location_type="header", status="UNAUTHENTICATED",
                    headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])


GCLOUD_PROJECT_NUMBER = "764086051850"


def access_not_configured() -> ApiError:
    """User credentials are billed to their OAuth client's project unless the request names a
    quota project (x-goog-user-project); gcloud's own project has the Drive API disabled."""
    return ApiError(403, "accessNotConfigured",
                    "Google Drive API has not been used in project %s before or it is disabled. "
                    "Enable it by visiting https://console.developers.google.com/apis/api/"
                    "drive.googleapis.com/overview?project=%s then retry."
                    % (GCLOUD_PROJECT_NUMBER, GCLOUD_PROJECT_NUMBER),
                    domain="usageLimits", status="PERMISSION_DENIED")


def insufficient_scopes() -> ApiError:
    err = ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.",
                   status="PERMISSION_DENIED")
    err.headers.append(("WWW-Authenticate",
                        'Bearer realm="https://accounts.google.com/", error="insufficient_scope"'))
    return err


class OAuthError(Exception):
    """An RFC 6749 token-endpoint error: ``{"error", "error_description"}``."""

    def __init__(self, status, error, description):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> HttpResponse:
        return json_response(self.status, {"error": self.error,
                                           "error_description": self.description})


class SendGridError(Exception):
    """SendGrid v3 error body: ``{"errors": [{"message", "field", "help"}]}``."""

    def __init__(self, status, errors):
        super().__init__(errors[0]["message"] if errors else "")
        self.status, self.errors = status, errors

    def response(self) -> HttpResponse:
        return json_response(self.status, {"errors": self.errors}, pretty=False)


class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


# =============================================================================
# 4. Partial responses: the `fields` mask (DOC_FIELDS)
# =============================================================================
# Grammar handled: comma-separated selections; `a/b` walks into objects;
# `a(b,c)` selects sub-fields; `*` selects everything at that level.  Each
# selected name is checked against the resource schema, and an unknown name is
# answered with 400 "Invalid field selection NAME" like Drive does.

ANY = "ANY"  # an object whose sub-fields the emulator does not validate

USER_SCHEMA = {k: None for k in ("displayName", "emailAddress", "kind", "me",
                                 "permissionId", "photoLink")}

CAPABILITY_NAMES = (
    "canAcceptOwnership canAccessViaGenAi canAddChildren canAddFolderFromAnotherDrive "
    "canAddMyDriveParent canChangeCopyRequiresWriterPermission "
    "canChangeItemDownloadRestriction canChangeSecurityUpdateEnabled "
    "canChangeViewersCanCopyContent canComment canCopy canDelete canDeleteChildren "
    "canDisableInheritedPermissions canDownload canEdit canEnableInheritedPermissions "
    "canListChildren canModifyContent canModifyContentRestriction "
    "canModifyEditorContentRestriction canModifyLabels canModifyOwnerContentRestriction "
    "canMoveChildrenOutOfDrive canMoveChildrenOutOfTeamDrive canMoveChildrenWithinDrive "
    "canMoveChildrenWithinTeamDrive canMoveItemIntoTeamDrive canMoveItemOutOfDrive "
    "canMoveItemOutOfTeamDrive canMoveItemWithinDrive canMoveItemWithinTeamDrive "
    "canMoveTeamDriveItem canReadDrive canReadLabels canReadRevisions canReadTeamDrive "
    "canRemoveChildren canRemoveContentRestriction canRemoveMyDriveParent canRename "
    "canShare canStartApproval canTrash canTrashChildren canUntrash").split()

# Every property of the discovery document's File schema (revision 20261106).
FILE_SCHEMA = {k: None for k in (
    "copyRequiresWriterPermission createdTime description driveId explicitlyTrashed "
    "fileExtension folderColorRgb fullFileExtension hasAugmentedPermissions hasThumbnail "
    "headRevisionId iconLink id inheritedPermissionsDisabled isAppAuthorized kind "
    "md5Checksum mimeType modifiedByMe modifiedByMeTime modifiedTime name originalFilename "
    "ownedByMe parents permissionIds quotaBytesUsed resourceKey sha1Checksum sha256Checksum "
    "shared sharedWithMeTime size spaces starred teamDriveId thumbnailLink thumbnailVersion "
    "trashed trashedTime version viewedByMe viewedByMeTime viewersCanCopyContent "
    "webContentLink webViewLink writersCanShare").split()}
FILE_SCHEMA.update({k: ANY for k in (
    "appProperties properties exportLinks clientEncryptionDetails contentHints "
    "contentRestrictions downloadRestrictions imageMediaMetadata labelInfo "
    "linkShareMetadata permissions shortcutDetails videoMediaMetadata").split()})
FILE_SCHEMA.update({k: USER_SCHEMA for k in ("owners", "lastModifyingUser", "sharingUser",
                                              "trashingUser")})
FILE_SCHEMA["capabilities"] = {k: None for k in CAPABILITY_NAMES}

FILE_LIST_SCHEMA = {"kind": None, "nextPageToken": None, "incompleteSearch": None,
                    "files": FILE_SCHEMA}

ABOUT_SCHEMA = {k: None for k in ("appInstalled", "canCreateDrives", "canCreateTeamDrives",
                                  "folderColorPalette", "kind", "maxUploadSize")}
ABOUT_SCHEMA.update({k: ANY for k in ("driveThemes", "exportFormats", "importFormats",
                                      "maxImportSizes", "teamDriveThemes")})
ABOUT_SCHEMA["storageQuota"] = {k: None for k in ("limit", "usage", "usageInDrive",
                                                  "usageInDriveTrash")}
ABOUT_SCHEMA["user"] = USER_SCHEMA

DEFAULT_FILE_MASK = {"kind": None, "id": None, "name": None, "mimeType": None}
DEFAULT_LIST_MASK = {"kind": None, "nextPageToken": None, "incompleteSearch": None,
                     "files": DEFAULT_FILE_MASK}


class FieldMaskError(Exception):
    pass


def parse_field_mask(text: str) -> dict:
    """Parse a `fields` value into a tree {name: subtree-or-None}.

    None as a subtree means "the whole value"; the key "*" means "all fields".
    """
    pos = 0
    n = len(text)

    def skip_ws():
        nonlocal pos
        while pos < n and text[pos].isspace():
            pos += 1

    def name():
        nonlocal pos
        skip_ws()
        start = pos
        while pos < n and (text[pos].isalnum() or text[pos] in "_*.-"):
            pos += 1
        if start == pos:
            raise FieldMaskError(text[start:] or text)
        return text[start:pos]

    def merge(tree, key, sub):
        if key in tree and tree[key] is None:
            return
        if sub is None or key not in tree:
            tree[key] = sub
            return
        for k, v in sub.items():
            merge(tree[key], k, v)

    def selection_list(tree, closing):
        nonlocal pos
        while True:
            path = [name()]
            skip_ws()
            while pos < n and text[pos] == "/":
                pos += 1
                path.append(name())
                skip_ws()
            sub = None
            if pos < n and text[pos] == "(":
                pos += 1
                sub = {}
                selection_list(sub, ")")
            for part in reversed(path[1:]):
                sub = {part: sub}
            merge(tree, path[0], sub)
            skip_ws()
            if pos < n and text[pos] == ",":
                pos += 1
                continue
            if closing:
                if pos < n and text[pos] == closing:
                    pos += 1
                    return
                raise FieldMaskError(text[pos:] or text)
            if pos != n:
                raise FieldMaskError(text[pos:])
            return

    tree = {}
    if text.strip():
        selection_list(tree, None)
    return tree


def validate_field_mask(tree: dict, schema) -> None:
    """Raise ApiError 400 for the first selected name the schema lacks."""
    for key, sub in tree.items():
        if key == "*":
            continue
        if schema is ANY:
            continue
        if not isinstance(schema, dict) or key not in schema:
            raise invalid_parameter("fields", "Invalid field selection %s" % key,
                                    reason="invalidParameter")
        if sub is not None:
            child = schema[key]
            if child is None:
                first = next(iter(sub))
                raise invalid_parameter("fields", "Invalid field selection %s" % first,
                                        reason="invalidParameter")
            validate_field_mask(sub, child)


def apply_field_mask(value, tree):
    """Keep only the selected parts of a JSON value (arrays are transparent)."""
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [apply_field_mask(v, tree) for v in value]
    if isinstance(value, dict):
        return {k: apply_field_mask(value[k], sub) for k, sub in tree.items() if k in value}
    return value


def mask_from_param(fields, schema, default) -> dict:
    if fields is None:
        return default
    try:
        tree = parse_field_mask(fields)
    except FieldMaskError as exc:
        raise invalid_parameter("fields", "Invalid field selection %s" % exc,
                                reason="invalidParameter")
    validate_field_mask(tree, schema)
    return tree


# =============================================================================
# 5. Drive's search language for files.list `q` (DOC_SEARCH_FILES, DOC_SEARCH_TERMS)
# =============================================================================
# A tokenizer plus a recursive-descent parser compile `q` into a predicate.
# Grammar (Drive documents that `and`/`or` are evaluated left to right, so they
# share one precedence level and associate to the left; `not` binds tightest):
#
#   query   := unary (("and" | "or") unary)*
#   unary   := "not" unary | "(" query ")" | term
#   term    := STRING "in" COLLECTION                      ('X' in parents)
#            | PROPS "has" "{" "key" "=" STRING "and" "value" "=" STRING "}"
#            | FIELD OPERATOR VALUE
#
# Strings are single-quoted with the escapes \' and \\.

class QueryError(Exception):
    pass


_TOKEN_RE = re.compile(r"\s*(?:(?P<op>!=|<=|>=|=|<|>)|(?P<punct>[(){}])|"
                       r"(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<num>-?\d+(?:\.\d+)?)|(?P<quote>'))")

KEYWORDS = {"and", "or", "not", "in", "has", "contains", "true", "false"}


def tokenize_query(text: str):
    tokens = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise QueryError("unexpected character at %d" % pos)
        if m.group("quote"):
            pos = m.end()
            buf = []
            while True:
                if pos >= len(text):
                    raise QueryError("unterminated string")
                ch = text[pos]
                if ch == "\\" and pos + 1 < len(text) and text[pos + 1] in "'\\":
                    buf.append(text[pos + 1])
                    pos += 2
                elif ch == "'":
                    pos += 1
                    break
                else:
                    buf.append(ch)
                    pos += 1
            tokens.append(("str", "".join(buf)))
            continue
        pos = m.end()
        if m.group("op"):
            tokens.append(("op", m.group("op")))
        elif m.group("punct"):
            tokens.append((m.group("punct"), m.group("punct")))
        elif m.group("num"):
            tokens.append(("num", m.group("num")))
        else:
            word = m.group("word")
            if word.lower() in KEYWORDS:
                tokens.append(("kw", word.lower()))
            else:
                tokens.append(("ident", word))
    tokens.append(("end", None))
    return tokens


STRING_TERMS = {"name": ("=", "!=", "contains"), "mimeType": ("=", "!=", "contains"),
                "fullText": ("contains",), "visibility": ("=", "!="),
                "shortcutDetails.targetId": ("=", "!=")}
BOOL_TERMS = {"trashed", "starred", "sharedWithMe"}
DATE_TERMS = {"createdTime", "modifiedTime", "viewedByMeTime", "sharedWithMeTime"}
COLLECTION_TERMS = {"parents", "owners", "writers", "readers"}
PROPERTY_TERMS = {"appProperties", "properties"}
COMPARISONS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
               "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
               ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


class QueryParser:
    """Compiles a `q` string into ``predicate(item, ctx) -> bool``."""

    def __init__(self, text: str):
        self.tokens = tokenize_query(text)
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos]

    def take(self, kind=None, value=None):
        tok = self.tokens[self.pos]
        if kind is not None and tok[0] != kind:
            raise QueryError("expected %s, got %r" % (kind, tok))
        if value is not None and tok[1] != value:
            raise QueryError("expected %r, got %r" % (value, tok))
        self.pos += 1
        return tok

    def parse(self):
        if self.peek()[0] == "end":
            raise QueryError("empty query")
        pred = self.query()
        if self.peek()[0] != "end":
            raise QueryError("trailing input %r" % (self.peek(),))
        return pred

    def query(self):
        pred = self.unary()
        while self.peek() in (("kw", "and"), ("kw", "or")):
            op = self.take()[1]
            rhs = self.unary()
            lhs = pred
            if op == "and":
                pred = lambda it, cx, l=lhs, r=rhs: l(it, cx) and r(it, cx)
            else:
                pred = lambda it, cx, l=lhs, r=rhs: l(it, cx) or r(it, cx)
        return pred

    def unary(self):
        tok = self.peek()
        if tok == ("kw", "not"):
            self.take()
            inner = self.unary()
            return lambda it, cx: not inner(it, cx)
        if tok[0] == "(":
            self.take()
            inner = self.query()
            self.take(")")
            return inner
        return self.term()

    def term(self):
        tok = self.take()
        if tok[0] == "str":  # 'value' in collection
            self.take("kw", "in")
            coll = self.take("ident")[1]
            if coll not in COLLECTION_TERMS:
                raise QueryError("unknown collection %s" % coll)
            return self._membership(tok[1], coll)
        if tok[0] != "ident":
            raise QueryError("expected a query term, got %r" % (tok,))
        field = tok[1]
        if field in PROPERTY_TERMS:
            self.take("kw", "has")
            return self._property_match(field)
        op_tok = self.take()
        if op_tok == ("kw", "contains"):
            op = "contains"
        elif op_tok[0] == "op":
            op = op_tok[1]
        else:
            raise QueryError("expected an operator after %s" % field)
        if field in STRING_TERMS:
            if op not in STRING_TERMS[field]:
                raise QueryError("operator %s not valid for %s" % (op, field))
            value = self.take("str")[1]
            return self._string_match(field, op, value)
        if field in BOOL_TERMS:
            if op not in ("=", "!="):
                raise QueryError("operator %s not valid for %s" % (op, field))
            kw = self.take("kw")[1]
            if kw not in ("true", "false"):
                raise QueryError("expected true or false")
            want = kw == "true"
            attr = {"trashed": "trashed"}.get(field)
            if op == "=":
                return lambda it, cx: bool(getattr(it, attr, False) if attr else False) == want
            return lambda it, cx: bool(getattr(it, attr, False) if attr else False) != want
        if field in DATE_TERMS:
            if op not in COMPARISONS:
                raise QueryError("operator %s not valid for %s" % (op, field))
            raw = self.take("str")[1]
            try:
                bound = parse_rfc3339(raw)
            except ValueError:
                raise QueryError("bad date %r" % raw)
            cmp = COMPARISONS[op]
            attr = {"createdTime": "created_ms"}.get(field, "modified_ms")
            if field == "sharedWithMeTime":
                return lambda it, cx: False
            return lambda it, cx: cmp(getattr(it, attr), bound)
        raise QueryError("unknown query term %s" % field)

    def _string_match(self, field, op, value):
        def getter(it):
            if field == "name":
                return it.name
            if field == "mimeType":
                return it.mime_type
            if field == "fullText":
                return "%s %s" % (it.name, it.description or "")
            if field == "visibility":
                return "limited"
            return ""

        if op == "=":
            return lambda it, cx: getter(it) == value
        if op == "!=":
            return lambda it, cx: getter(it) != value
        if field == "name":
            # Drive: `contains` on name is a prefix match (DOC_SEARCH_TERMS footnote).
            low = value.lower()
            return lambda it, cx: it.name.lower().startswith(low)
        low = value.lower()
        return lambda it, cx: low in getter(it).lower()

    def _membership(self, value, coll):
        if coll == "parents":
            return lambda it, cx: it.parent is not None and it.parent == cx.resolve_alias(value)
        if coll == "owners":
            return lambda it, cx: it.drive_id is None and it.owner is not None and \
                it.owner.lower() == cx.resolve_email(value)
        need = ROLE_RANK["writer"] if coll == "writers" else ROLE_RANK["reader"]
        return lambda it, cx: ROLE_RANK.get(cx.role_of(it, cx.resolve_email(value)), 0) >= need

    def _property_match(self, field):
        self.take("{")
        wanted = {}
        for i in range(2):
            which = self.take("ident")[1]
            if which not in ("key", "value") or which in wanted:
                raise QueryError("expected key= and value=")
            self.take("op", "=")
            wanted[which] = self.take("str")[1]
            if i == 0:
                self.take("kw", "and")
        self.take("}")
        key, val = wanted["key"], wanted["value"]
        if field == "appProperties":  # only the caller's Cloud project's own
            return lambda it, cx: it.app_properties_of(cx.principal.project).get(key) == val
        return lambda it, cx: it.properties.get(key) == val


def compile_query(text: str):
    try:
        return QueryParser(text).parse()
    except QueryError:
        raise invalid_parameter("q")


# =============================================================================
# 6. Data model
# =============================================================================

class Principal:
    """Who an access token acts as, and for which app.

    ``is_service_account`` is True only when a service account acts as
    itself; with domain-wide delegation the principal is the impersonated user.
    ``project`` is the Google Cloud project of the credentials (the "app" whose
    private appProperties the token reads and writes): a service account's own
    project, also when it impersonates a user, or the OAuth client's project.
    """

    __slots__ = ("email", "is_service_account", "client_project_disabled", "project")

    def __init__(self, email, is_service_account, project, client_project_disabled=False):
        self.email = email
        self.is_service_account = is_service_account
        self.project = project
        # user credentials whose OAuth client's project has the Drive API disabled (gcloud's)
        self.client_project_disabled = client_project_disabled


def service_account_project(client_email: str) -> str:
    """A service account lives in the project named in its address,
    NAME@PROJECT_ID.iam.gserviceaccount.com; other addresses count by their domain."""
    domain = client_email.rsplit("@", 1)[-1].lower()
    suffix = ".iam.gserviceaccount.com"
    return domain[:-len(suffix)] if domain.endswith(suffix) else domain


def oauth_client_project(client_id: str) -> str:
    """An OAuth client ID starts with its project's number,
    NUMBER-RANDOM.apps.googleusercontent.com; without a '-', the part before the first '.'."""
    return re.split(r"[-.]", client_id, maxsplit=1)[0]


class AccessToken:
    __slots__ = ("value", "principal", "scopes", "expires_at", "revoked")

    def __init__(self, value, principal, scopes, expires_at):
        self.value, self.principal, self.scopes = value, principal, scopes
        self.expires_at, self.revoked = expires_at, False


class SharedDrive:
    __slots__ = ("id", "name", "members", "created_ms")

    def __init__(self, drive_id, name, members, created_ms):
        self.id, self.name, self.members, self.created_ms = drive_id, name, members, created_ms


class Item:
    """One Drive item (file or folder).

    ``root_kind`` is "my_drive" for a user's My Drive root and "shared_drive"
    for a shared drive's root folder (whose ID equals the drive ID); both are
    hidden from files.list.
    """

    def __init__(self, item_id, name, mime_type, parent, drive_id, owner, created_ms):
        self.id = item_id
        self.name = name
        self.mime_type = mime_type
        self.parent = parent
        self.drive_id = drive_id
        self.owner = owner  # None in shared drives
        self.permissions = {}  # email -> role, granted on this item (and inherited below)
        self.created_ms = created_ms
        self.modified_ms = created_ms
        self.app_properties = {}  # Cloud project -> that app's private appProperties
        self.creator_project = None  # the app that created the item (the control API's view)
        self.properties = {}
        self.description = None
        self.trashed = False
        self.explicitly_trashed = False
        self.trashed_ms = None
        self.trashing_user = None
        self.content = None  # bytearray, or None when discarded / not binary
        self.content_discarded = False
        self.size = None
        self.md5 = self.sha1 = self.sha256 = None
        self.reported_md5 = None  # set by the corrupt_md5 fault
        self.abusive = False  # flagged as malware or spam by Google
        self.version = 1
        self.head_revision_id = None
        self.original_filename = None
        self.root_kind = None
        self.last_modifier = owner

    @property
    def is_folder(self):
        return self.mime_type == FOLDER_MIME

    def app_properties_of(self, project) -> dict:
        """The appProperties `project` sees: only its own (DOC_PROPERTIES, "private to the
        requesting app"), or the control API's fixture set until it wrote some."""
        own = self.app_properties.get(project)
        return own if own is not None else self.app_properties.get(ANY_PROJECT, {})

    @property
    def is_binary(self):
        return not self.mime_type.startswith(GOOGLE_APPS_PREFIX)

    def set_content(self, data, size, md5, sha1, sha256):
        self.content = data
        self.size = size
        self.md5, self.sha1, self.sha256 = md5, sha1, sha256
        self.head_revision_id = "0B" + random_id(40)


class ContentDigest:
    """Size and MD5/SHA-1/SHA-256 of bytes received so far, plus (optionally) the bytes."""

    def __init__(self, keep: bool):
        self.data = bytearray() if keep else None
        self.size = 0
        self._md5, self._sha1, self._sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()

    def append(self, chunk) -> None:
        if not len(chunk):
            return
        if self.data is not None:
            self.data += chunk
        self._md5.update(chunk)
        self._sha1.update(chunk)
        self._sha256.update(chunk)
        self.size += len(chunk)

    def digests(self):
        return self._md5.hexdigest(), self._sha1.hexdigest(), self._sha256.hexdigest()


class UploadSession:
    """A resumable upload session (DOC_MANAGE_UPLOADS, "Perform a resumable upload")."""

    def __init__(self, session_id, principal, metadata, params, content_type,
                 declared_length, keep_content):
        self.id = session_id
        self.principal = principal
        self.metadata = metadata
        self.params = params  # query parameters given at initiation (fields, supportsAllDrives)
        self.content_type = content_type
        self.declared_length = declared_length
        self.total = None  # once a request names the total size
        self.digest = ContentDigest(keep_content)
        self.state = "open"
        self.file_id = None
        self.created_at = time.time()
        self.last_activity = self.created_at
        self.corrupt_md5 = False

    @property
    def stored(self):
        return self.digest.size


class UploadThrottle:
    """Paces the reading of upload request bodies to a rate shared by all connections, like
    one slow uplink: each piece read takes the next n / rate seconds of the link's time.

    Reading slower is what a slow network does to a client: its socket buffers fill, its
    writes block, and Drive answers a chunk only once the whole body has arrived."""

    PIECE = 16 * 1024

    def __init__(self):
        self.lock = threading.Lock()
        self.link_free_at = 0.0  # time.monotonic() when the link has sent all it was given

    def wait_for(self, n: int, rate: float) -> None:
        with self.lock:
            now = time.monotonic()
            self.link_free_at = max(now, self.link_free_at) + n / rate
            delay = self.link_free_at - now
        time.sleep(delay)


class FaultRule:
    """One fault-injection rule of the control API (see README)."""

    OPS = {"token", "upload_initiate", "upload_chunk", "upload_status", "upload_cancel",
           "list", "get", "get_media", "create", "update", "delete", "about", "mail_send",
           "any"}

    def __init__(self, spec: dict):
        if not isinstance(spec, dict):
            raise ControlError(400, "each rule must be an object")
        self.op = spec.get("op", "any")
        if self.op not in self.OPS:
            raise ControlError(400, "unknown op %r" % self.op)
        self.nth = int(spec.get("nth", 1))
        self.times = int(spec.get("times", 1))
        if self.nth < 1 or self.times < 1:
            raise ControlError(400, "nth and times must be >= 1")
        self.action = spec.get("action")
        if not isinstance(self.action, dict) or not self.action:
            raise ControlError(400, "rule needs an action object")
        known = {"status", "reason", "message", "domain", "retry_after", "body", "content_type",
                 "drop", "delay_ms", "hang_ms", "persist_partial", "expire_tokens",
                 "corrupt_md5", "error", "error_description"}
        unknown = set(self.action) - known
        if unknown:
            raise ControlError(400, "unknown action keys %s" % sorted(unknown))
        if "drop" in self.action and self.action["drop"] not in ("before", "after", "mid_body"):
            raise ControlError(400, "drop must be before, after or mid_body")
        if "persist_partial" in self.action:
            n = int(self.action["persist_partial"])
            if n < 0 or n % UPLOAD_GRANULARITY:
                raise ControlError(400, "persist_partial must be a multiple of 262144")
        self.seen = 0
        self.fired = 0

    def matches(self, op: str) -> bool:
        return self.op == "any" or self.op == op

    def describe(self) -> str:
        parts = []
        for key in ("status", "drop", "delay_ms", "hang_ms", "persist_partial"):
            if key in self.action:
                parts.append("%s:%s" % (key, self.action[key]))
        for key in ("expire_tokens", "corrupt_md5"):
            if self.action.get(key):
                parts.append(key)
        if "body" in self.action and "status" not in self.action:
            parts.append("body")
        return ",".join(parts) or "noop"

    def to_json(self):
        return {"op": self.op, "nth": self.nth, "times": self.times, "action": self.action,
                "seen": self.seen, "fired": self.fired}


# =============================================================================
# 7. Emulator state and the permission model
# =============================================================================

class Emulator:
    """All mutable state, guarded by one re-entrant lock."""

    def __init__(self, discard_content=False):
        self.lock = threading.RLock()
        self.discard_content = discard_content
        self.upload_throttle = UploadThrottle()
        self.host = "127.0.0.1"
        self.port = 0
        self.reset()

    # -- lifecycle -----------------------------------------------------------

    def reset(self):
        with self.lock:
            self.config = dict(DEFAULT_CONFIG)
            self.service_accounts = {}  # client_email -> {"public_key", "dwd", "dwd_scopes"}
            self.authorized_users = {}  # client_id -> {"client_secret", "refresh_token", ...}
            self.display_names = {}  # email -> name
            self.sendgrid_keys = set()
            self.tokens = {}  # access token -> AccessToken
            self.drives = {}  # id -> SharedDrive
            self.items = {}  # id -> Item
            self.my_drive_roots = {}  # email (lower) -> root item id
            self.sessions = {}  # upload id -> UploadSession
            self.page_cursors = {}  # page token -> cursor dict
            self.faults = []
            self.requests = []
            self.request_seq = 0
            self.mail = []
            self.last_created_ms = 0

    def base_url(self, host_header=None) -> str:
        host = host_header or "%s:%d" % (self.host, self.port)
        return "http://%s/" % host

    def next_created_ms(self) -> int:
        """Creation times strictly increase across items (bumped by 1 ms on ties)."""
        ms = max(now_ms(), self.last_created_ms + 1)
        self.last_created_ms = ms
        return ms

    def display_name(self, email):
        return self.display_names.get(email.lower()) or email.split("@")[0]

    def user_resource(self, email, me=None):
        res = {"kind": "drive#user", "displayName": self.display_name(email),
               "emailAddress": email, "permissionId": permission_id_for(email)}
        if me is not None:
            res["me"] = me
        return res

    # -- tree helpers ----------------------------------------------------------

    def my_drive_root(self, email: str) -> Item:
        key = email.lower()
        root_id = self.my_drive_roots.get(key)
        if root_id and root_id in self.items:
            return self.items[root_id]
        root = Item(new_file_id()[:28], "My Drive", FOLDER_MIME, None, None, email,
                    self.next_created_ms())
        root.root_kind = "my_drive"
        self.items[root.id] = root
        self.my_drive_roots[key] = root.id
        return root

    def ancestors(self, item: Item):
        """The item's parent chain, nearest first (cycle-safe)."""
        seen = set()
        cur = self.items.get(item.parent) if item.parent else None
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            yield cur
            cur = self.items.get(cur.parent) if cur.parent else None

    def descendants(self, item: Item):
        out, frontier = [], [item.id]
        while frontier:
            parent = frontier.pop()
            for child in self.items.values():
                if child.parent == parent:
                    out.append(child)
                    frontier.append(child.id)
        return out

    # -- permission model ---------------------------------------------------------

    def role_of(self, item: Item, email: str):
        """Effective role of `email` on `item`, or None when it cannot see it.

        Shared drives: the drive membership role applies to every item
        (DOC_SHARED_DRIVES), and a folder or file inside the drive can be shared
        with anyone, members or not, which adds to (never lowers) what they
        inherit: "within a shared drive, permissions are strictly expansive".
        My Drive: the owner has "owner"; otherwise the best explicit permission
        on the item or an ancestor folder applies, and owning an ancestor folder
        grants "writer" on what others put in it.
        """
        if email is None:
            return None
        low = email.lower()
        best = None

        def consider(role):
            nonlocal best
            if role and ROLE_RANK.get(role, 0) > ROLE_RANK.get(best, 0):
                best = role

        if item.drive_id:
            drive = self.drives.get(item.drive_id)
            if not drive:
                return None
            for member, role in drive.members.items():
                if member.lower() == low:
                    consider(role)
            for it in [item] + list(self.ancestors(item)):
                for member, role in it.permissions.items():
                    if member.lower() == low:
                        consider(role)
            return best
        if item.owner and item.owner.lower() == low:
            return "owner"

        for member, role in item.permissions.items():
            if member.lower() == low:
                consider("writer" if role == "owner" else role)
        for anc in self.ancestors(item):
            if anc.owner and anc.owner.lower() == low:
                consider("writer")
            for member, role in anc.permissions.items():
                if member.lower() == low:
                    consider("writer" if role == "owner" else role)
        return best

    def rank(self, item, principal) -> int:
        return ROLE_RANK.get(self.role_of(item, principal.email), 0)

    def can_delete(self, item, principal) -> bool:
        """files.delete: organizer in a shared drive, the owner in My Drive (DOC_DELETE)."""
        if item.root_kind:
            return False
        role = self.role_of(item, principal.email)
        if item.drive_id:
            return role == "organizer"
        return role == "owner"

    def can_trash(self, item, principal) -> bool:
        """Trash: fileOrganizer or organizer in a shared drive, the owner in My Drive."""
        if item.root_kind:
            return False
        role = self.role_of(item, principal.email)
        if item.drive_id:
            return role in ("fileOrganizer", "organizer")
        return role == "owner"

    def capabilities(self, item, principal) -> dict:
        rank = self.rank(item, principal)
        folder = item.is_folder
        writer = rank >= ROLE_RANK["writer"]
        caps = {
            "canAddChildren": folder and writer,
            "canComment": rank >= ROLE_RANK["commenter"],
            "canCopy": (not folder) and rank >= 1,
            "canDelete": self.can_delete(item, principal),
            "canDownload": item.is_binary and not folder and rank >= 1,
            "canEdit": writer,
            "canListChildren": folder and rank >= 1,
            "canModifyContent": writer and not folder,
            "canReadRevisions": writer and not folder,
            "canRemoveChildren": folder and writer,
            "canRename": writer and not item.root_kind,
            "canShare": writer,
            "canTrash": self.can_trash(item, principal),
            "canUntrash": self.can_trash(item, principal),
        }
        if item.drive_id:  # the reference fills these in for shared-drive items only
            role = self.role_of(item, principal.email)
            caps["canDeleteChildren"] = folder and role == "organizer"
            caps["canTrashChildren"] = folder and role in ("fileOrganizer", "organizer")
            caps["canReadDrive"] = rank >= 1
        return caps

    def visible(self, item, principal, supports_all_drives) -> bool:
        """Shared-drive items exist for a caller only with supportsAllDrives=true
        (DOC_ENABLE_SHARED_DRIVES); otherwise any role grants visibility."""
        if item.drive_id and not supports_all_drives:
            return False
        return self.role_of(item, principal.email) is not None

    def lookup(self, file_id, principal, supports_all_drives) -> Item:
        item = self.resolve(file_id, principal)
        if item is None or not self.visible(item, principal, supports_all_drives):
            raise not_found(file_id)
        return item

    def resolve(self, file_id, principal):
        if file_id == "root":
            return self.my_drive_root(principal.email)
        return self.items.get(file_id)

    # -- rendering ----------------------------------------------------------------

    def file_resource(self, item: Item, principal=None) -> dict:
        """The full Drive v3 File resource (DOC_FILES_REF), int64 values as strings."""
        res = {"kind": "drive#file", "id": item.id, "name": item.name,
               "mimeType": item.mime_type, "starred": False, "trashed": item.trashed,
               "explicitlyTrashed": item.explicitly_trashed}
        if item.parent:
            res["parents"] = [item.parent]
        res["spaces"] = ["drive"]
        res["version"] = str(item.version)
        res["webViewLink"] = ("https://drive.google.com/drive/folders/%s" if item.is_folder
                              else "https://drive.google.com/file/d/%s/view?usp=drivesdk") % item.id
        res["createdTime"] = rfc3339(item.created_ms)
        res["modifiedTime"] = rfc3339(item.modified_ms)
        if item.description is not None:
            res["description"] = item.description
        app_properties = item.app_properties_of(
            item.creator_project if principal is None else principal.project)
        if app_properties:
            res["appProperties"] = dict(app_properties)
        if item.properties:
            res["properties"] = dict(item.properties)
        if item.drive_id:
            res["driveId"] = item.drive_id
            if item.trashed and item.trashed_ms is not None:
                res["trashedTime"] = rfc3339(item.trashed_ms)
                if item.trashing_user:
                    res["trashingUser"] = self.user_resource(item.trashing_user)
        else:
            if item.owner:
                me = None if principal is None else item.owner.lower() == principal.email.lower()
                res["owners"] = [self.user_resource(item.owner, me)]
                if principal is not None:
                    res["ownedByMe"] = me
        if item.last_modifier:
            res["lastModifyingUser"] = self.user_resource(
                item.last_modifier,
                None if principal is None else item.last_modifier.lower() == principal.email.lower())
        if item.is_binary and not item.is_folder and item.size is not None:
            res["originalFilename"] = item.original_filename or item.name
            if "." in item.name.strip("."):
                parts = item.name.split(".")
                res["fileExtension"] = parts[-1]
                res["fullFileExtension"] = ".".join(parts[1:])
            md5 = item.reported_md5 or item.md5
            res["md5Checksum"] = md5.upper() if md5 and self.config.get("md5_uppercase") else md5
            res["sha1Checksum"] = item.sha1
            res["sha256Checksum"] = item.sha256
            res["size"] = str(item.size)
            res["headRevisionId"] = item.head_revision_id
            res["quotaBytesUsed"] = str(item.size)
        else:
            res["quotaBytesUsed"] = "0"
        if principal is not None:
            res["capabilities"] = self.capabilities(item, principal)
        return res

    def control_resource(self, item: Item) -> dict:
        """The file as its creator's app sees it, plus what no Drive caller sees at once."""
        res = self.file_resource(item, None)
        if item.permissions:
            res["emulatorPermissions"] = dict(item.permissions)
        if item.app_properties:
            res["emulatorAppProperties"] = {p: dict(v) for p, v in item.app_properties.items()}
        if item.creator_project:
            res["emulatorCreatorProject"] = item.creator_project
        return res


# =============================================================================
# 8. Request context, request log and fault selection
# =============================================================================

class Request:
    """One parsed HTTP request (body already read)."""

    def __init__(self, method, raw_path, headers, body, chunked):
        self.method = method
        split = urlsplit(raw_path)
        self.path = unquote(split.path)
        self.raw_query = split.query
        multi = parse_qs(split.query, keep_blank_values=True)
        self.query = {k: v[0] for k, v in multi.items()}
        self.headers = headers
        self.body = body
        self.chunked = chunked
        self.op = "other"
        self.fault = None  # FaultRule.action that fired, if any

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def param(self, name, default=None):
        return self.query.get(name, default)

    def flag(self, name, *aliases) -> bool:
        for key in (name,) + aliases:
            if key in self.query:
                value = self.query[key].strip().lower()
                if value not in ("true", "false", ""):
                    raise invalid_parameter(key, "Invalid boolean value: '%s'." % self.query[key])
                if value == "true":
                    return True
        return False

    def json_body(self):
        if not self.body:
            return {}
        try:
            value = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "parseError", "Parse Error")
        if not isinstance(value, dict):
            raise ApiError(400, "badRequest",
                           "Invalid JSON payload received. Expected an object.")
        return value


REDACTED_QUERY_KEYS = {"access_token", "key", "assertion", "refresh_token", "client_secret"}
UPLOAD_PATHS = ("/upload/drive/v3/files", "/resumable/upload/drive/v3/files")


def parse_content_range(value):
    """Parse an upload request's Content-Range.

    Returns ("status", total|None) for ``bytes */N`` / ``bytes */*`` or
    ("range", first, last, total|None) for ``bytes a-b/N`` / ``bytes a-b/*``.
    Raises ValueError otherwise.
    """
    m = re.fullmatch(r"\s*bytes\s+(?:\*|(\d+)-(\d+))/(\*|\d+)\s*", value)
    if not m:
        raise ValueError(value)
    first, last, total = m.groups()
    total_n = None if total == "*" else int(total)
    if first is None:
        return ("status", total_n)
    return ("range", int(first), int(last), total_n)


def is_drive_root_path(req):
    return req.path in ("/drive/v3/files", "/drive/v3/files/")


def classify(emu: Emulator, req: Request) -> str:
    """Name the operation a request performs; fault rules select on it."""
    path, method = req.path, req.method
    if path == "/token":
        return "token"
    if path == "/v3/mail/send":
        return "mail_send"
    if path.rstrip("/") in UPLOAD_PATHS:
        if "upload_id" in req.query:
            if method == "DELETE":
                return "upload_cancel"
            if req.body:
                return "upload_chunk"
            cr = req.header("Content-Range")
            if cr is None:
                return "upload_chunk"  # a whole (empty) upload in one request
            try:
                parsed = parse_content_range(cr)
            except ValueError:
                return "upload_chunk"
            if parsed[0] == "range":
                return "upload_chunk"  # Python's empty final `bytes N-(N-1)/N`
            total = parsed[1]
            with emu.lock:
                sess = emu.sessions.get(req.query["upload_id"])
                finalizing = (sess is not None and sess.state == "open" and total is not None
                              and total == sess.stored)
            return "upload_chunk" if finalizing else "upload_status"
        if req.param("uploadType") == "resumable":
            return "upload_initiate"
        return "create"
    if path.startswith("/upload/drive/v3/files/") or \
            path.startswith("/resumable/upload/drive/v3/files/"):
        return "update"
    if is_drive_root_path(req):
        return "list" if method == "GET" else "create"
    if path.startswith("/drive/v3/files/"):
        if path.rstrip("/") == "/drive/v3/files/trash" and method == "DELETE":
            return "delete"
        if method == "GET":
            return "get_media" if req.param("alt") == "media" else "get"
        if method in ("PATCH", "PUT"):
            return "update"
        if method == "DELETE":
            return "delete"
        if method == "POST":
            return "create"
    if path.rstrip("/") == "/drive/v3/about":
        return "about"
    return "other"


def log_request(emu: Emulator, req: Request) -> dict:
    """Append a request-log entry (never containing token or key values)."""
    query = {k: ("<redacted>" if k in REDACTED_QUERY_KEYS else v) for k, v in req.query.items()}
    cl = req.header("Content-Length")
    try:
        content_length = int(cl) if cl is not None else len(req.body)
    except ValueError:
        content_length = len(req.body)
    entry = {
        "seq": None, "method": req.method, "path": req.path, "query": query, "op": req.op,
        "content_range": req.header("Content-Range"), "content_length": content_length,
        "body_len": len(req.body), "has_authorization": req.header("Authorization") is not None,
        "status": None, "fault": None, "ts": time.time(),
        # additions
        "chunked": req.chunked, "range": req.header("Range"),
        "upload_id": req.query.get("upload_id"),
        "x_upload_content_type": req.header("X-Upload-Content-Type"),
        "x_upload_content_length": req.header("X-Upload-Content-Length"),
    }
    with emu.lock:
        emu.request_seq += 1
        entry["seq"] = emu.request_seq
        emu.requests.append(entry)
    return entry


def select_fault(emu: Emulator, req: Request):
    """Count this request against every matching rule; return the first that fires."""
    chosen = None
    with emu.lock:
        for rule in emu.faults:
            if not rule.matches(req.op):
                continue
            rule.seen += 1
            if chosen is None and rule.nth <= rule.seen < rule.nth + rule.times:
                rule.fired += 1
                chosen = rule
    return chosen


def fault_status_response(op: str, action: dict) -> HttpResponse:
    """The canned error answer of a {"status": N, ...} fault, shaped for the op's service."""
    status = int(action["status"])
    headers = []
    if "retry_after" in action:
        headers.append(("Retry-After", str(action["retry_after"])))
    if "body" in action:
        body = action["body"]
        body = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
        ctype = action.get("content_type")
        if ctype is None:
            try:
                json.loads(body)
                ctype = "application/json; charset=UTF-8"
            except ValueError:
                ctype = "text/plain; charset=UTF-8"
        return HttpResponse(status, body, [("Content-Type", ctype)] + headers)
    if op == "token":
        default_error = {400: "invalid_grant", 401: "invalid_client", 429: "rate_limit_exceeded",
                         500: "internal_failure"}.get(status, "temporarily_unavailable"
                                                       if status >= 500 else "invalid_request")
        return json_response(status, {
            "error": action.get("error", default_error),
            "error_description": action.get("error_description",
                                            action.get("message", "Injected fault"))}, headers)
    if op == "mail_send":
        return json_response(status, {"errors": [{
            "message": action.get("message", "injected fault (HTTP %d)" % status),
            "field": None, "help": None}]}, headers, pretty=False)
    reason, message = DEFAULT_ERROR_FOR_STATUS.get(
        status, ("backendError" if status >= 500 else "badRequest", "Error %d" % status))
    reason = action.get("reason", reason)
    message = action.get("message", message)
    if status == 403 and reason in ("rateLimitExceeded", "userRateLimitExceeded") \
            and "message" not in action:
        message = "Rate Limit Exceeded" if reason == "rateLimitExceeded" \
            else "User Rate Limit Exceeded"
    err = ApiError(status, reason, message, domain=action.get("domain"), headers=headers)
    if status == 401:
        err.location, err.location_type = "Authorization", "header"
    return err.response()


# =============================================================================
# 9. OAuth 2.0 token endpoint (DOC_OAUTH_SA, DOC_OAUTH_REFRESH)
# =============================================================================

def handle_token(emu: Emulator, req: Request) -> HttpResponse:
    """POST /token: the JWT-bearer grant and the refresh-token grant.

    JWT grant (DOC_OAUTH_SA "Preparing to make an authorized API call"): the
    assertion is RS256-signed by the service account's key; `iss` names the
    account, `aud` is the token URI, `exp - iat` is at most one hour, `scope`
    lists the scopes and the optional `sub` asks for domain-wide delegation.
    """
    try:
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8"),
                                             keep_blank_values=True).items()}
    except UnicodeDecodeError:
        raise OAuthError(400, "invalid_request", "Invalid request body.")
    grant = form.get("grant_type")
    if not grant:
        raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
    if grant == JWT_BEARER_GRANT:
        principal, scope = _jwt_grant(emu, req, form)
    elif grant == "refresh_token":
        principal, scope = _refresh_grant(emu, form)
    else:
        raise OAuthError(400, "unsupported_grant_type", "Invalid grant_type: %s" % grant)
    with emu.lock:
        lifetime = int(emu.config["token_lifetime_seconds"])
        value = "ya29." + secrets.token_urlsafe(96)
        emu.tokens[value] = AccessToken(value, principal, frozenset(scope.split()),
                                        time.time() + lifetime)
    return json_response(200, {"access_token": value, "expires_in": lifetime,
                               "scope": scope, "token_type": "Bearer"})


def _jwt_grant(emu, req, form):
    assertion = form.get("assertion")
    if not assertion:
        raise OAuthError(400, "invalid_request", "Missing required parameter: assertion")
    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError(400, "invalid_grant", "Invalid JWT: Failed to parse.")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise OAuthError(400, "invalid_grant", "Invalid JWT: Failed to parse.")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError(400, "invalid_grant", "Invalid JWT: Failed to parse.")
    with emu.lock:
        account = emu.service_accounts.get(str(claims.get("iss", "")).lower())
    if account is None:
        raise OAuthError(400, "invalid_grant", "Invalid grant: account not found")
    if header.get("alg") != "RS256":
        raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
    try:
        account["public_key"].verify(signature, (parts[0] + "." + parts[1]).encode("ascii"),
                                     padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise OAuthError(400, "invalid_grant", "Invalid JWT Signature.")
    port = emu.port
    accepted_aud = {GOOGLE_TOKEN_URI, *LEGACY_TOKEN_URIS,
                    "http://%s:%d/token" % (emu.host, port),
                    "http://127.0.0.1:%d/token" % port, "http://localhost:%d/token" % port}
    if req.header("Host"):
        accepted_aud.add("http://%s/token" % req.header("Host"))
    if claims.get("aud") not in accepted_aud:
        raise OAuthError(400, "invalid_grant", "Invalid JWT: audience does not match the token URI.")
    try:
        iat, exp = float(claims["iat"]), float(claims["exp"])
    except (KeyError, TypeError, ValueError):
        raise OAuthError(400, "invalid_grant", BAD_JWT_TIME_MESSAGE)
    now = time.time() + float(emu.config["clock_offset_seconds"])
    leeway = float(emu.config["jwt_iat_leeway_seconds"])
    if exp - iat > 3600 or exp <= iat or not (iat - leeway <= now <= exp):
        raise OAuthError(400, "invalid_grant", BAD_JWT_TIME_MESSAGE)
    scope = claims.get("scope")
    if not scope or not isinstance(scope, str):
        raise OAuthError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    email = account["client_email"]
    subject = claims.get("sub")
    if subject and subject.lower() != email.lower():
        allowed = account.get("dwd_scopes")
        if not account["dwd"] or (allowed is not None and not set(scope.split()) <= set(allowed)):
            raise OAuthError(401, "unauthorized_client", DWD_REFUSED_MESSAGE)
        return Principal(subject, False, account["project"]), scope
    return Principal(email, True, account["project"]), scope


def _refresh_grant(emu, form):
    for name in ("client_id", "refresh_token"):
        if not form.get(name):
            raise OAuthError(400, "invalid_request", "Missing required parameter: %s" % name)
    with emu.lock:
        user = emu.authorized_users.get(form["client_id"])
    if user is None:
        raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
    if form.get("client_secret") != user["client_secret"]:
        raise OAuthError(401, "invalid_client", "Unauthorized")
    if form["refresh_token"] != user["refresh_token"] or user.get("revoked"):
        raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
    scope = " ".join(user["scopes"])
    if form.get("scope"):
        requested = form["scope"].split()
        if not set(requested) <= set(user["scopes"]):
            raise OAuthError(400, "invalid_scope",
                             "The requested scope is not within the granted scopes.")
        scope = " ".join(requested)
    return Principal(user["email"], False, user["project"], user["client_project_disabled"]), scope


def authenticate(emu: Emulator, req: Request, scopes=READ_SCOPES) -> Principal:
    """Resolve the Bearer token of a Drive request (401 authError when absent,
    unknown or expired; 403 insufficientPermissions for a token without a
    scope the method accepts)."""
    value = req.header("Authorization") or ""
    match = re.fullmatch(r"\s*[Bb]earer\s+(\S+)\s*", value)
    if not match:
        raise auth_error()
    with emu.lock:
        token = emu.tokens.get(match.group(1))
        if token is None or token.revoked or token.expires_at <= time.time():
            raise auth_error()
        if not (token.scopes & scopes):
            raise insufficient_scopes()
        if token.principal.client_project_disabled and not req.header("x-goog-user-project"):
            raise access_not_configured()
        return token.principal


def optional_token_check(emu: Emulator, req: Request) -> None:
    """Session URIs carry their own credential (the upload_id), so clients may
    omit Authorization there; a token that *is* sent must still be valid."""
    if req.header("Authorization") is None:
        return
    authenticate(emu, req, scopes=READ_SCOPES | WRITE_SCOPES | UPDATE_SCOPES)


# =============================================================================
# 10. Drive v3: files.list / get / create / update / delete, about.get
# =============================================================================

class QueryContext:
    """What a compiled `q` predicate may ask about the caller."""

    def __init__(self, emu, principal):
        self.emu, self.principal = emu, principal

    def resolve_alias(self, value):
        if value == "root":
            return self.emu.my_drive_root(self.principal.email).id
        return value

    def resolve_email(self, value):
        return (self.principal.email if value == "me" else value).lower()

    def role_of(self, item, email):
        return self.emu.role_of(item, email)


ORDER_KEYS = {"createdTime", "folder", "modifiedByMeTime", "modifiedTime", "name",
              "name_natural", "quotaBytesUsed", "recency", "sharedWithMeTime", "starred",
              "viewedByMeTime"}


def _natural_key(name):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", name) if part]


def parse_order_by(text):
    """Parse `orderBy` ("key [desc], ...") into [(key, descending)]."""
    out = []
    for raw in text.split(","):
        words = raw.split()
        if not words:
            continue
        if len(words) > 2 or words[0] not in ORDER_KEYS or \
                (len(words) == 2 and words[1].lower() not in ("desc", "asc")):
            raise invalid_parameter("orderBy", "Invalid Value")
        out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return out


def sort_items(items, order):
    """Stable multi-key sort; ties keep creation order."""
    items = sorted(items, key=lambda it: (it.created_ms, it.id))
    for key, desc in reversed(order):
        if key == "createdTime":
            keyf = lambda it: it.created_ms
        elif key in ("modifiedTime", "modifiedByMeTime", "recency", "viewedByMeTime"):
            keyf = lambda it: it.modified_ms
        elif key == "name":
            keyf = lambda it: it.name
        elif key == "name_natural":
            keyf = lambda it: _natural_key(it.name)
        elif key == "folder":
            keyf = lambda it: 0 if it.is_folder else 1  # folders first
        elif key == "quotaBytesUsed":
            keyf = lambda it: it.size or 0
        else:  # starred, sharedWithMeTime: constant for everything here
            keyf = lambda it: 0
        items.sort(key=keyf, reverse=desc)
    return items


def files_list(emu: Emulator, req: Request) -> HttpResponse:
    """GET /drive/v3/files (DOC_FILES_REF files.list, DOC_SEARCH_FILES,
    DOC_ENABLE_SHARED_DRIVES).

    Returns trashed items too unless `q` excludes them; shared-drive items
    appear only with supportsAllDrives=true and includeItemsFromAllDrives=true.
    Page tokens are server-side cursors over the first page's ordering, so
    deleting already-listed files between pages skips nothing.
    """
    principal = authenticate(emu, req)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    include_all = req.flag("includeItemsFromAllDrives", "includeTeamDriveItems")
    corpora = req.param("corpora") or req.param("corpus") or "user"
    drive_id = req.param("driveId") or req.param("teamDriveId")
    spaces = [s.strip() for s in (req.param("spaces") or "drive").split(",")]
    mask = mask_from_param(req.param("fields"), FILE_LIST_SCHEMA, DEFAULT_LIST_MASK)

    raw_size = req.param("pageSize")
    page_size = 100
    if raw_size is not None:
        try:
            page_size = int(raw_size)
        except ValueError:
            raise invalid_parameter("pageSize", "Invalid value '%s'." % raw_size)
        if page_size < 1:
            raise invalid_parameter(
                "pageSize", "Invalid value '%s'. Values must be within the range: [1, 1000]"
                % raw_size)
        page_size = min(page_size, 1000)
    for sp in spaces:
        if sp not in ("drive", "appDataFolder", "photos"):
            raise invalid_parameter("spaces", "Invalid Value")
    if corpora not in ("user", "domain", "drive", "allDrives"):
        raise invalid_parameter("corpora", "Invalid Value")
    if (corpora == "drive") != bool(drive_id):
        raise invalid_parameter("driveId", "The driveId parameter must be specified if and only "
                                "if corpora is set to drive.", reason="badRequest")
    if corpora in ("drive", "allDrives") and not include_all:
        raise invalid_parameter("includeItemsFromAllDrives",
                                "The includeItemsFromAllDrives parameter must be set to true "
                                "when corpora is set to drive or allDrives.",
                                reason="badRequest")
    if include_all and not supports:
        raise invalid_parameter("supportsAllDrives",
                                "The includeItemsFromAllDrives parameter is only supported when "
                                "supportsAllDrives is set to true.", reason="badRequest")
    predicate = compile_query(req.param("q")) if req.param("q", "").strip() else None
    order = parse_order_by(req.param("orderBy") or "")

    with emu.lock:
        ctx = QueryContext(emu, principal)
        if corpora == "drive":
            drive = emu.drives.get(drive_id)
            if drive is None or emu.role_of(emu.items[drive.id], principal.email) is None:
                raise ApiError(404, "notFound", "Shared drive not found: %s" % drive_id,
                               location="driveId", location_type="parameter")

        def matches(it):
            if it.root_kind or it.id not in emu.items:
                return False
            if "drive" not in spaces:
                return False
            if corpora == "drive" and it.drive_id != drive_id:
                return False
            if it.drive_id and not (supports and include_all):
                return False
            if emu.role_of(it, principal.email) is None:
                return False
            return predicate is None or predicate(it, ctx)

        token = req.param("pageToken")
        fingerprint = (principal.email, req.param("q"), req.param("orderBy"), corpora,
                       drive_id, supports, include_all, ",".join(spaces))
        if token:
            cursor = emu.page_cursors.get(token)
            if cursor is None or cursor["fingerprint"] != fingerprint:
                raise invalid_parameter("pageToken")
            remaining = [emu.items[i] for i in cursor["ids"] if i in emu.items]
            remaining = [it for it in remaining if matches(it)]
        else:
            remaining = sort_items([it for it in emu.items.values() if matches(it)], order)
        page, rest = remaining[:page_size], remaining[page_size:]
        result = {"kind": "drive#fileList", "incompleteSearch": False}
        if rest:
            next_token = "~!!~" + secrets.token_urlsafe(48)
            emu.page_cursors[next_token] = {"fingerprint": fingerprint,
                                            "ids": [it.id for it in rest]}
            while len(emu.page_cursors) > MAX_PAGE_CURSORS:  # oldest tokens lapse first
                del emu.page_cursors[next(iter(emu.page_cursors))]
            result["nextPageToken"] = next_token
        result["files"] = [emu.file_resource(it, principal) for it in page]
    return json_response(200, apply_field_mask(result, mask), pretty=_pretty(req))


def _pretty(req):
    return req.param("prettyPrint", "true").lower() != "false"


def files_get(emu: Emulator, req: Request, file_id: str) -> HttpResponse:
    """GET /drive/v3/files/{id}: metadata (DOC_FILES_REF files.get)."""
    principal = authenticate(emu, req)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    mask = mask_from_param(req.param("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)
    with emu.lock:
        item = emu.lookup(file_id, principal, supports)
        res = emu.file_resource(item, principal)
    return json_response(200, apply_field_mask(res, mask), pretty=_pretty(req))


def parse_range_header(value, size):
    """Interpret a single `Range: bytes=...` value for a body of `size` bytes.

    Returns (first, last) inclusive, None when the header should be ignored,
    or "unsatisfiable".
    """
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value or "")
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.groups()
    if first == "":  # suffix range: the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return (max(size - n, 0), size - 1) if size else "unsatisfiable"
    first = int(first)
    if last and int(last) < first:
        return None  # syntactically invalid: ignored, the whole body is sent
    if first >= size:
        return "unsatisfiable"
    last = int(last) if last else size - 1
    return first, min(last, size - 1)


def files_get_media(emu: Emulator, req: Request, file_id: str) -> HttpResponse:
    """GET /drive/v3/files/{id}?alt=media (DOC_MANAGE_DOWNLOADS).

    Full body with 200, a single `Range: bytes=a-b` / `bytes=a-` / `bytes=-n`
    with 206 + Content-Range, 416 + `Content-Range: bytes */size` when the
    range starts past the end.  Folders and Google Docs are not downloadable.
    """
    principal = authenticate(emu, req)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    with emu.lock:
        item = emu.lookup(file_id, principal, supports)
        if item.is_folder or not item.is_binary:
            raise ApiError(403, "fileNotDownloadable",
                           "Only files with binary content can be downloaded. Use Export with "
                           "Docs Editors files.", location="alt", location_type="parameter")
        # acknowledgeAbuse "is only applicable when ... the user is the owner of the file or an
        # organizer of the shared drive in which the file resides" (files.get reference)
        if item.abusive and not (req.flag("acknowledgeAbuse")
                                 and emu.role_of(item, principal.email) in ("owner", "organizer")):
            raise ApiError(403, "cannotDownloadAbusiveFile",
                           "This file has been identified as malware or spam and cannot be "
                           "downloaded.", location="acknowledgeAbuse",
                           location_type="parameter")
        if item.content is None:
            raise ApiError(404, "notFound", "File content of %s is not retained: the emulator "
                           "runs with --discard-content." % file_id,
                           location="fileId", location_type="parameter")
        size = len(item.content)
        headers = [("Content-Type", item.mime_type)]
        rng = parse_range_header(req.header("Range"), size) if req.header("Range") else None
        if rng == "unsatisfiable":
            raise ApiError(416, "requestedRangeNotSatisfiable", "Request range not satisfiable",
                           headers=[("Content-Range", "bytes */%d" % size)])
        if rng is None:
            return HttpResponse(200, bytes(item.content), headers)
        first, last = rng
        headers.append(("Content-Range", "bytes %d-%d/%d" % (first, last, size)))
        return HttpResponse(206, bytes(item.content[first:last + 1]), headers)


WRITABLE_CREATE = {"name", "mimeType", "parents", "appProperties", "properties",
                   "description", "createdTime", "modifiedTime", "originalFilename",
                   "starred", "id", "kind", "folderColorRgb", "copyRequiresWriterPermission",
                   "writersCanShare", "viewersCanCopyContent", "contentHints", "trashed",
                   "driveId", "teamDriveId"}
WRITABLE_UPDATE = {"name", "mimeType", "appProperties", "properties", "description",
                   "modifiedTime", "originalFilename", "starred", "trashed", "kind",
                   "folderColorRgb", "copyRequiresWriterPermission", "writersCanShare",
                   "viewersCanCopyContent", "contentHints", "id"}


def check_metadata_keys(meta: dict, writable: set) -> None:
    """Unknown names are a 400 parse error; known but output-only ones are 403
    fieldNotWritable (most File properties are read-only in DOC_FILES_REF)."""
    for key in meta:
        if key not in FILE_SCHEMA:
            raise ApiError(400, "badRequest",
                           "Invalid JSON payload received. Unknown name \"%s\": "
                           "Cannot find field." % key)
    for key in meta:
        if key not in writable:
            if key == "parents":
                raise ApiError(403, "fieldNotWritable",
                               "The parents field is not directly writable in update requests. "
                               "Use the addParents and removeParents parameters instead.")
            raise ApiError(403, "fieldNotWritable",
                           "The resource body includes fields which are not directly writable.")


def check_property_map(name, value, allow_null):
    if value is None:
        return
    if not isinstance(value, dict):
        raise ApiError(400, "badRequest", "Invalid value for %s: expected an object." % name)
    for key, val in value.items():
        if val is None and allow_null:
            continue
        if not isinstance(val, str):
            raise ApiError(400, "badRequest", "Invalid value at '%s.%s': expected a string."
                           % (name, key))
        if len(key.encode()) + len(val.encode()) > MAX_PROPERTY_BYTES:
            raise ApiError(400, "badRequest", "The property %s exceeds the maximum size of "
                           "%d bytes for its key and value." % (key, MAX_PROPERTY_BYTES))


def merge_properties(target: dict, patch):
    """Merge a properties patch; null deletes a key (DOC_FILES_REF appProperties)."""
    for key, value in (patch or {}).items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def planned_properties(item, project, meta: dict):
    """The caller's appProperties and the public properties once `meta` is applied to `item`
    (None: a new file), within DOC_PROPERTIES' per-file limits. The messages are invented."""
    app = dict(item.app_properties_of(project)) if item else {}
    public = dict(item.properties) if item else {}
    merge_properties(app, meta.get("appProperties"))
    merge_properties(public, meta.get("properties"))
    other_apps = sum(len(v) for p, v in item.app_properties.items()
                     if p not in (project, ANY_PROJECT)) if item else 0
    if len(public) > MAX_PUBLIC_PROPERTIES:
        raise ApiError(400, "badRequest", "A file can have at most %d properties."
                       % MAX_PUBLIC_PROPERTIES)
    if len(app) > MAX_APP_PROPERTIES_PER_APP:
        raise ApiError(400, "badRequest", "A file can have at most %d appProperties per app."
                       % MAX_APP_PROPERTIES_PER_APP)
    if len(app) + len(public) + other_apps > MAX_PROPERTIES_PER_FILE:
        raise ApiError(400, "badRequest", "A file can have at most %d properties and "
                       "appProperties in all." % MAX_PROPERTIES_PER_FILE)
    return app, public


def check_description(meta: dict) -> None:
    """`description` is a string of at most MAX_DESCRIPTION_CHARS characters (the message is
    invented: Google publishes none)."""
    if "description" not in meta or meta["description"] is None:
        return
    if not isinstance(meta["description"], str):
        raise ApiError(400, "badRequest", "Invalid value for description: expected a string.")
    if len(meta["description"]) > MAX_DESCRIPTION_CHARS:
        raise ApiError(400, "badRequest", "The description exceeds the maximum length of %d "
                       "characters." % MAX_DESCRIPTION_CHARS, location="description",
                       location_type="other")


def usage_of(emu: Emulator, email: str):
    """(usageInDrive, usageInDriveTrash) of the My Drive items `email` owns."""
    total = trash = 0
    low = email.lower()
    for it in emu.items.values():
        if it.drive_id is None and it.owner and it.owner.lower() == low and it.size:
            total += it.size
            if it.trashed:
                trash += it.size
    return total, trash


def quota_limit(emu: Emulator):
    limit = emu.config.get("about_limit_bytes")
    return None if limit in (None, "") else int(limit)


def check_quota(emu: Emulator, owner, extra_bytes):
    """My Drive uploads beyond the storage limit fail with storageQuotaExceeded."""
    limit = quota_limit(emu)
    if owner is None or limit is None or not extra_bytes:
        return
    used, _ = usage_of(emu, owner)
    if used + extra_bytes > limit:
        raise ApiError(403, "storageQuotaExceeded",
                       "The user's Drive storage quota has been exceeded.")


def prepare_create(emu: Emulator, principal: Principal, meta: dict, supports: bool):
    """Validate new-file metadata for files.create (all upload types).

    Checks, in order: the parent exists and is visible (404), is a folder
    (400), the caller may add children (403 insufficientFilePermissions), and
    a service account acting as itself writes only into shared drives (403
    storageQuotaExceeded, DOC_HANDLE_ERRORS / DOC_SHARED_DRIVES).  Returns
    (parent item, owner email or None).
    """
    check_metadata_keys(meta, WRITABLE_CREATE)
    check_property_map("appProperties", meta.get("appProperties"), False)
    check_property_map("properties", meta.get("properties"), False)
    planned_properties(None, principal.project, meta)
    check_description(meta)
    parents = meta.get("parents")
    if parents is not None and (not isinstance(parents, list)
                                or not all(isinstance(p, str) for p in parents)):
        raise ApiError(400, "badRequest", "Invalid value for parents: expected a list of IDs.")
    if parents and len(parents) > 1:
        raise ApiError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
    if "name" in meta and not isinstance(meta["name"], str):
        raise ApiError(400, "badRequest", "Invalid value for name: expected a string.")
    parent_id = parents[0] if parents else "root"
    parent = emu.resolve(parent_id, principal)
    if parent is None or not emu.visible(parent, principal, supports):
        raise not_found(parent_id)
    if not parent.is_folder:
        raise ApiError(400, "badRequest", "The specified parent is not a folder.",
                       location="parents", location_type="other")
    if emu.rank(parent, principal) < ROLE_RANK["writer"]:
        raise insufficient_permissions(parent.id)
    if principal.is_service_account and parent.drive_id is None:
        raise ApiError(403, "storageQuotaExceeded", SA_NO_QUOTA_MESSAGE, domain="usageLimits")
    owner = None if parent.drive_id else principal.email
    return parent, owner


def create_item(emu: Emulator, principal: Principal, parent: Item, owner, meta: dict,
                default_mime=DEFAULT_MIME, created_ms=None) -> Item:
    """A new item from metadata prepare_create() accepted; its appProperties are the
    creating app's (principal.project's) alone."""
    mime = meta.get("mimeType") or default_mime
    created = created_ms if created_ms is not None else emu.next_created_ms()
    item = Item(new_file_id(), meta.get("name") or "Untitled", mime, parent.id,
                parent.drive_id, owner, created)
    item.last_modifier = principal.email
    item.creator_project = principal.project
    if meta.get("modifiedTime"):
        try:
            item.modified_ms = parse_rfc3339(meta["modifiedTime"])
        except ValueError:
            raise ApiError(400, "badRequest", "Invalid value for modifiedTime.")
    if meta.get("appProperties"):
        item.app_properties = {principal.project: dict(meta["appProperties"])}
    item.properties = dict(meta.get("properties") or {})
    item.description = meta.get("description")
    item.original_filename = meta.get("originalFilename")
    if meta.get("trashed"):
        item.trashed = item.explicitly_trashed = True
        item.trashed_ms = created
    emu.items[item.id] = item
    return item


def files_create(emu: Emulator, req: Request) -> HttpResponse:
    """POST /drive/v3/files: metadata-only create (a folder, an empty file;
    DOC_CREATE_FILE).  Binary files get size 0 and the MD5 of no bytes."""
    principal = authenticate(emu, req, WRITE_SCOPES)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    mask = mask_from_param(req.param("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)
    meta = req.json_body()
    with emu.lock:
        parent, owner = prepare_create(emu, principal, meta, supports)
        item = create_item(emu, principal, parent, owner, meta)
        if item.is_binary and not item.is_folder:
            digest = ContentDigest(not emu.discard_content)
            item.set_content(digest.data, 0, *digest.digests())
        res = emu.file_resource(item, principal)
    return json_response(200, apply_field_mask(res, mask), pretty=_pretty(req))


def set_trashed(emu: Emulator, item: Item, trashed: bool, who: str):
    """Trash or restore an item; a folder's descendants follow implicitly
    (explicitlyTrashed stays False for them, DOC_DELETE)."""
    stamp = now_ms()
    if trashed:
        item.trashed, item.explicitly_trashed = True, True
        item.trashed_ms, item.trashing_user = stamp, who
        for child in emu.descendants(item):
            if not child.trashed:
                child.trashed, child.explicitly_trashed = True, False
                child.trashed_ms, child.trashing_user = stamp, who
    else:
        item.trashed = item.explicitly_trashed = False
        item.trashed_ms = item.trashing_user = None
        for child in emu.descendants(item):
            if child.trashed and not child.explicitly_trashed:
                child.trashed = False
                child.trashed_ms = child.trashing_user = None


def files_update(emu: Emulator, req: Request, file_id: str) -> HttpResponse:
    """PATCH /drive/v3/files/{id}: rename, trash/untrash, property merge and
    single-parent moves through addParents/removeParents (DOC_FILES_REF
    files.update, DOC_DELETE "Move a file to the trash")."""
    principal = authenticate(emu, req, UPDATE_SCOPES)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    mask = mask_from_param(req.param("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)
    meta = req.json_body()
    check_metadata_keys(meta, WRITABLE_UPDATE)
    check_property_map("appProperties", meta.get("appProperties"), True)
    check_property_map("properties", meta.get("properties"), True)
    check_description(meta)
    with emu.lock:
        item = emu.lookup(file_id, principal, supports)
        content_changes = {k for k in meta if k not in ("trashed", "kind", "id")}
        add = [p for p in (req.param("addParents") or "").split(",") if p]
        remove = [p for p in (req.param("removeParents") or "").split(",") if p]
        if "id" in meta and meta["id"] != item.id:
            raise ApiError(403, "fieldNotWritable",
                           "The resource body includes fields which are not directly writable.")
        if (content_changes or add or remove) and emu.rank(item, principal) < ROLE_RANK["writer"]:
            raise insufficient_permissions(item.id)
        if "trashed" in meta and bool(meta["trashed"]) != item.trashed:
            if not emu.can_trash(item, principal):
                raise insufficient_permissions(item.id)
        new_parent = None
        if add or remove:
            if len(add) > 1 or (add and remove != [item.parent]):
                raise ApiError(403, "cannotAddParent",
                               "Increasing the number of parents is not allowed.")
            if remove and not add:
                raise ApiError(403, "cannotRemoveParent", "Removing the last parent is not "
                               "allowed.")
            new_parent = emu.lookup(add[0], principal, supports)
            if not new_parent.is_folder:
                raise ApiError(400, "badRequest", "The specified parent is not a folder.")
            if emu.rank(new_parent, principal) < ROLE_RANK["writer"]:
                raise insufficient_permissions(new_parent.id)
            if new_parent.drive_id != item.drive_id:
                raise ApiError(403, "cannotMoveItemOutOfDrive" if item.drive_id else
                               "cannotMoveItemIntoTeamDrive",
                               "Moving items between drives is not emulated.")
        app_properties, properties = planned_properties(item, principal.project, meta)
        if "name" in meta:
            if not isinstance(meta["name"], str):
                raise ApiError(400, "badRequest", "Invalid value for name: expected a string.")
            item.name = meta["name"]
        if "mimeType" in meta and meta["mimeType"]:
            item.mime_type = meta["mimeType"]
        if "description" in meta:
            item.description = meta["description"]
        if "originalFilename" in meta:
            item.original_filename = meta["originalFilename"]
        if "appProperties" in meta:  # the other apps' stay as they were
            item.app_properties[principal.project] = app_properties
        item.properties = properties
        if new_parent is not None:
            item.parent = new_parent.id
        if "trashed" in meta and bool(meta["trashed"]) != item.trashed:
            set_trashed(emu, item, bool(meta["trashed"]), principal.email)
        if meta.get("modifiedTime"):
            try:
                item.modified_ms = parse_rfc3339(meta["modifiedTime"])
            except ValueError:
                raise ApiError(400, "badRequest", "Invalid value for modifiedTime.")
        elif content_changes or new_parent is not None:
            item.modified_ms = max(now_ms(), item.modified_ms)
            item.last_modifier = principal.email
        item.version += 1
        res = emu.file_resource(item, principal)
    return json_response(200, apply_field_mask(res, mask), pretty=_pretty(req))


def delete_tree(emu: Emulator, item: Item, principal: Principal):
    """Remove an item; for a folder, descendants go too -- in My Drive only
    those the caller owns, the rest lose their parent (DOC_FILES_REF
    files.delete)."""
    for child in emu.descendants(item):
        if child.drive_id or (child.owner and child.owner.lower() == principal.email.lower()):
            emu.items.pop(child.id, None)
        elif child.parent == item.id or child.parent not in emu.items:
            child.parent = None
    emu.items.pop(item.id, None)


def files_delete(emu: Emulator, req: Request, file_id: str) -> HttpResponse:
    """DELETE /drive/v3/files/{id}: permanent delete, 204 with no body.
    Only the owner (My Drive) or an organizer (shared drive) may do it (DOC_DELETE)."""
    principal = authenticate(emu, req, WRITE_SCOPES)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    with emu.lock:
        item = emu.lookup(file_id, principal, supports)
        if not emu.can_delete(item, principal):
            raise insufficient_permissions(item.id)
        delete_tree(emu, item, principal)
    return HttpResponse(204)


def files_empty_trash(emu: Emulator, req: Request) -> HttpResponse:
    """DELETE /drive/v3/files/trash: permanently delete the caller's trashed
    My Drive items, or a shared drive's trash (driveId; organizers only)."""
    principal = authenticate(emu, req, EMPTY_TRASH_SCOPES)
    drive_id = req.param("driveId")
    with emu.lock:
        if drive_id:
            drive = emu.drives.get(drive_id)
            if drive is None or emu.role_of(emu.items[drive.id], principal.email) is None:
                raise ApiError(404, "notFound", "Shared drive not found: %s" % drive_id,
                               location="driveId", location_type="parameter")
            if emu.role_of(emu.items[drive.id], principal.email) != "organizer":
                raise insufficient_permissions(drive_id)
            victims = [it for it in emu.items.values()
                       if it.drive_id == drive_id and it.explicitly_trashed]
        else:
            victims = [it for it in emu.items.values()
                       if it.drive_id is None and it.explicitly_trashed and it.owner
                       and it.owner.lower() == principal.email.lower()]
        for it in victims:
            if it.id in emu.items:
                delete_tree(emu, it, principal)
    return HttpResponse(204)


def about_get(emu: Emulator, req: Request) -> HttpResponse:
    """GET /drive/v3/about (DOC_ABOUT_REF).  `fields` is mandatory; storage
    figures are int64 strings and `limit` is omitted when unlimited."""
    principal = authenticate(emu, req)
    if req.param("fields") is None:
        raise invalid_parameter("fields", "The 'fields' parameter is required for this method.",
                                reason="required")
    mask = mask_from_param(req.param("fields"), ABOUT_SCHEMA, None)
    with emu.lock:
        used, trash = usage_of(emu, principal.email)
        quota = {"usage": str(used), "usageInDrive": str(used), "usageInDriveTrash": str(trash)}
        limit = quota_limit(emu)
        if limit is not None:
            quota = {"limit": str(limit), **quota}
        about = {
            "kind": "drive#about",
            "user": emu.user_resource(principal.email, True),
            "storageQuota": quota,
            "maxUploadSize": str(MAX_UPLOAD_SIZE),
            "appInstalled": False,
            "canCreateDrives": not principal.is_service_account,
            "canCreateTeamDrives": not principal.is_service_account,
            "folderColorPalette": ["#ac725e", "#d06b64", "#f83a22", "#fa573c"],
        }
    return json_response(200, apply_field_mask(about, mask), pretty=_pretty(req))


# =============================================================================
# 11. Drive uploads: resumable sessions, multipart and simple media
#     (DOC_MANAGE_UPLOADS; cancellation follows DOC_GCS_RESUMABLE)
# =============================================================================

def upload_initiate(emu: Emulator, req: Request) -> HttpResponse:
    """POST /upload/drive/v3/files?uploadType=resumable: open a session.

    The JSON body (possibly empty) is the file metadata; X-Upload-Content-Type
    and X-Upload-Content-Length describe the media.  Auth, the parent checks
    and the service-account quota rule apply here.  The answer is 200 with an
    empty body and the session URI in Location.
    """
    principal = authenticate(emu, req, WRITE_SCOPES)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    mask_from_param(req.param("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)  # validate early
    ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if req.body and ctype not in ("application/json", ""):
        raise ApiError(400, "badRequest", "Unsupported content with type: %s" % ctype)
    meta = req.json_body()
    declared = req.header("X-Upload-Content-Length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "badRequest", "Invalid X-Upload-Content-Length header.")
        declared = int(declared)
        if declared > MAX_UPLOAD_SIZE:
            raise ApiError(403, "fileTooLarge", "The file exceeds the maximum upload size.")
    with emu.lock:
        parent, owner = prepare_create(emu, principal, meta, supports)
        if declared:
            check_quota(emu, owner, declared)
        session_id = "AHVrFx" + secrets.token_urlsafe(60)
        params = {k: v for k, v in req.query.items() if k in ("fields", "supportsAllDrives",
                                                               "supportsTeamDrives",
                                                               "prettyPrint")}
        sess = UploadSession(session_id, principal, meta, params,
                             req.header("X-Upload-Content-Type") or meta.get("mimeType"),
                             declared, not emu.discard_content)
        emu.sessions[session_id] = sess
        host = req.header("Host")
    location = "%supload/drive/v3/files?uploadType=resumable&upload_id=%s" % (
        emu.base_url(host), session_id)
    return HttpResponse(200, b"", [("Location", location), ("X-GUploader-UploadID", session_id)])


def expire_if_idle(emu: Emulator, sess: UploadSession) -> None:
    """Expire a session left idle longer than the configured lifetime
    (DOC_MANAGE_UPLOADS gives a week; tests can shorten it through config)."""
    if sess.state == "open" and \
            time.time() - sess.last_activity > float(emu.config["session_lifetime_seconds"]):
        sess.state = "expired"
        sess.digest.data = None


def _session_or_404(emu, upload_id) -> UploadSession:
    sess = emu.sessions.get(upload_id)
    if sess is not None:
        expire_if_idle(emu, sess)
    if sess is None or sess.state in ("cancelled", "expired"):
        raise ApiError(404, "notFound", "Upload session not found or expired.",
                       location="upload_id", location_type="parameter")
    return sess


def _incomplete(sess: UploadSession, req: Request) -> HttpResponse:
    """308 Resume Incomplete with `Range: bytes=0-N` (none when nothing is stored).

    With `X-GUploader-No-308: yes` the same answer comes as 200 carrying
    `X-HTTP-Status-Code-Override: 308` (as Go's client asks for)."""
    headers = [("X-GUploader-UploadID", sess.id)]
    if sess.stored:
        headers.append(("Range", "bytes=0-%d" % (sess.stored - 1)))
    if (req.header("X-GUploader-No-308") or "").lower() == "yes":
        headers.append(("X-HTTP-Status-Code-Override", "308"))
        return HttpResponse(200, b"", headers)
    return HttpResponse(308, b"", headers, reason_phrase="Resume Incomplete")


def _completed_response(emu: Emulator, sess: UploadSession) -> HttpResponse:
    item = emu.items.get(sess.file_id)
    if item is None:
        raise ApiError(404, "notFound", "File not found: %s." % sess.file_id,
                       location="fileId", location_type="parameter")
    mask = mask_from_param(sess.params.get("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)
    res = emu.file_resource(item, sess.principal)
    pretty = sess.params.get("prettyPrint", "true").lower() != "false"
    return json_response(200, apply_field_mask(res, mask), [("X-GUploader-UploadID", sess.id)],
                         pretty=pretty)


def _complete_session(emu: Emulator, sess: UploadSession, corrupt_md5: bool) -> HttpResponse:
    """The upload reached its total: create the file (it did not exist before)."""
    parent_id = (sess.metadata.get("parents") or ["root"])[0]
    parent = emu.resolve(parent_id, sess.principal)
    if parent is None:
        raise not_found(parent_id)
    owner = None if parent.drive_id else sess.principal.email
    check_quota(emu, owner, sess.stored)
    item = create_item(emu, sess.principal, parent, owner, sess.metadata,
                       default_mime=sess.content_type or DEFAULT_MIME)
    item.set_content(sess.digest.data, sess.stored, *sess.digest.digests())
    if corrupt_md5 or sess.corrupt_md5:
        item.reported_md5 = hashlib.md5(b"corrupt-md5:" + item.md5.encode()).hexdigest()
    sess.state = "completed"
    sess.file_id = item.id
    sess.digest.data = None  # the bytes now belong to the file
    return _completed_response(emu, sess)


def _bad_upload(message) -> ApiError:
    return ApiError(400, "badRequest", message)


def upload_session_put(emu: Emulator, req: Request) -> HttpResponse:
    """PUT/POST on a session URI: store a chunk, answer a status query, or finish.

    * `Content-Range: bytes a-b/N` or `bytes a-b/*` with the chunk body;
      `bytes */N` (finalize at N, or a status query) and `bytes */*` (status
      query) with an empty body; Python's `bytes N-(N-1)/N` empty final
      request; no Content-Range at all = the whole media in one request.
    * A chunk that starts before the stored length has its overlap skipped;
      one that starts after it is rejected (400).
    * A non-final chunk must carry at least 262144 bytes, and only the largest
      multiple of 262144 of the received total is kept.  DOC_MANAGE_UPLOADS
      tells clients to resume from the 308's Range header rather than from
      what they sent, which is what makes keeping less legitimate.
    """
    action = req.fault or {}
    with emu.lock:
        sess = _session_or_404(emu, req.query.get("upload_id", ""))
        optional_token_check(emu, req)
        sess.last_activity = time.time()
        if sess.state == "completed":
            return _completed_response(emu, sess)
        if action.get("corrupt_md5"):
            sess.corrupt_md5 = True
        body = req.body
        cr = req.header("Content-Range")
        if cr is None:
            parsed = ("range", 0, len(body) - 1, len(body))
        else:
            try:
                parsed = parse_content_range(cr)
            except ValueError:
                raise _bad_upload("Failed to parse Content-Range header.")

        def check_total(total):
            if total is None:
                return
            if sess.declared_length is not None and total != sess.declared_length:
                raise _bad_upload("Invalid request. The Content-Range total %d does not match "
                                  "the declared X-Upload-Content-Length %d."
                                  % (total, sess.declared_length))
            if sess.total is not None and total != sess.total:
                raise _bad_upload("Invalid request. The Content-Range total %d differs from "
                                  "the total %d given earlier." % (total, sess.total))
            if total < sess.stored:
                raise _bad_upload("Invalid request. The Content-Range total %d is smaller "
                                  "than the %d bytes already stored." % (total, sess.stored))

        if parsed[0] == "status":
            total = parsed[1]
            if body:
                raise _bad_upload("Failed to parse Content-Range header.")
            check_total(total)
            if total is not None:
                sess.total = total
                if total == sess.stored:
                    return _complete_session(emu, sess, bool(action.get("corrupt_md5")))
            return _incomplete(sess, req)

        _, first, last, total = parsed
        length = last - first + 1
        if length < 0 or length != len(body):
            raise _bad_upload("Invalid request. The Content-Range header %r does not match the "
                              "%d bytes of the request body." % (cr, len(body)))
        if length == 0 and total != first:
            raise _bad_upload("Failed to parse Content-Range header.")
        if total is not None and last + 1 > total:
            raise _bad_upload("Invalid request. The Content-Range end %d lies past the total "
                              "size %d." % (last, total))
        check_total(total)
        if first > sess.stored:
            raise _bad_upload("Invalid request. Content-Range start %d exceeds the %d bytes "
                              "stored so far." % (first, sess.stored))
        final = total is not None and last + 1 == total
        if not final and len(body) < UPLOAD_GRANULARITY:
            raise _bad_upload(SMALL_CHUNK_MESSAGE.format(n=len(body)))
        if sess.declared_length is not None and last + 1 > sess.declared_length:
            raise _bad_upload("Invalid request. The upload exceeds the declared "
                              "X-Upload-Content-Length %d." % sess.declared_length)
        if total is not None:
            sess.total = total
        view = memoryview(body)
        skip = sess.stored - first  # bytes of this chunk already stored
        if "persist_partial" in action:
            keep_to = first + int(action["persist_partial"])
            if keep_to > sess.stored:
                sess.digest.append(view[skip:keep_to - first])
            return _incomplete(sess, req)
        if final:
            sess.digest.append(view[skip:])
            return _complete_session(emu, sess, bool(action.get("corrupt_md5")))
        keep_to = ((first + len(body)) // UPLOAD_GRANULARITY) * UPLOAD_GRANULARITY
        if keep_to > sess.stored:
            sess.digest.append(view[skip:keep_to - first])
        return _incomplete(sess, req)


def upload_session_cancel(emu: Emulator, req: Request) -> HttpResponse:
    """DELETE on a session URI cancels it: 499, later requests get 404.

    Drive does not document cancellation; this follows Cloud Storage, which
    shares the upload front end (DOC_GCS_RESUMABLE)."""
    with emu.lock:
        sess = _session_or_404(emu, req.query.get("upload_id", ""))
        if sess.state != "open":
            raise ApiError(404, "notFound", "Upload session not found or expired.",
                           location="upload_id", location_type="parameter")
        sess.state = "cancelled"
        sess.digest.data = None
    return HttpResponse(499, b"", reason_phrase="Client Closed Request")


def split_multipart(body: bytes, boundary: str):
    """Split a multipart/related body into [(headers dict, payload bytes)].

    Accepts CRLF and bare LF line ends (google-api-python-client emits LF)."""
    delim = b"--" + boundary.encode("latin-1")
    pieces = body.split(delim)
    if len(pieces) < 3:
        raise ValueError("no parts")
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        if piece.startswith(b"\r\n"):
            piece = piece[2:]
        elif piece.startswith(b"\n"):
            piece = piece[1:]
        if piece.endswith(b"\r\n"):
            piece = piece[:-2]
        elif piece.endswith(b"\n"):
            piece = piece[:-1]
        crlf, lf = piece.find(b"\r\n\r\n"), piece.find(b"\n\n")
        if crlf == -1 and lf == -1:
            head, payload = piece, b""
            if head.strip() and b":" not in head:
                head, payload = b"", piece
        elif lf == -1 or (crlf != -1 and crlf < lf):
            head, payload = piece[:crlf], piece[crlf + 4:]
        else:
            head, payload = piece[:lf], piece[lf + 2:]
        headers = {}
        for line in head.decode("latin-1").splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, payload))
    return parts


def upload_simple(emu: Emulator, req: Request) -> HttpResponse:
    """POST /upload/drive/v3/files?uploadType=multipart|media (DOC_MANAGE_UPLOADS).

    multipart/related: the metadata JSON part first, then the media part;
    media: the body is the content and the file is created as "Untitled".
    """
    principal = authenticate(emu, req, WRITE_SCOPES)
    supports = req.flag("supportsAllDrives", "supportsTeamDrives")
    mask = mask_from_param(req.param("fields"), FILE_SCHEMA, DEFAULT_FILE_MASK)
    upload_type = req.param("uploadType")
    ctype_full = req.header("Content-Type") or ""
    ctype = ctype_full.split(";")[0].strip().lower()
    if upload_type == "multipart":
        m = re.search(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', ctype_full)
        if ctype != "multipart/related" or not m:
            raise ApiError(400, "badContent", "Multipart upload requires a multipart/related "
                           "Content-Type with a boundary.")
        try:
            parts = split_multipart(req.body, m.group(1) or m.group(2))
        except ValueError:
            raise ApiError(400, "badContent", "Invalid multipart request body.")
        if len(parts) != 2:
            raise ApiError(400, "badContent", "Multipart upload needs exactly two parts: "
                           "metadata then media (got %d)." % len(parts))
        (meta_headers, meta_bytes), (media_headers, media) = parts
        if meta_headers.get("content-type", "application/json").split(";")[0].strip() \
                != "application/json":
            raise ApiError(400, "badContent", "The first part must be JSON metadata.")
        try:
            meta = json.loads(meta_bytes.decode("utf-8")) if meta_bytes.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "parseError", "Parse Error")
        if not isinstance(meta, dict):
            raise ApiError(400, "parseError", "Parse Error")
        if media_headers.get("content-transfer-encoding", "").lower() == "base64":
            try:
                media = base64.b64decode(media)
            except ValueError:
                raise ApiError(400, "badContent", "Invalid base64 media part.")
        media_type = media_headers.get("content-type") or DEFAULT_MIME
    elif upload_type == "media":
        meta, media, media_type = {}, req.body, ctype or DEFAULT_MIME
    else:
        raise ApiError(400, "badRequest", "Invalid uploadType: %s" % upload_type,
                       location="uploadType", location_type="parameter")
    action = req.fault or {}
    with emu.lock:
        parent, owner = prepare_create(emu, principal, meta, supports)
        check_quota(emu, owner, len(media))
        item = create_item(emu, principal, parent, owner, meta, default_mime=media_type)
        digest = ContentDigest(not emu.discard_content)
        digest.append(memoryview(media))
        item.set_content(digest.data, digest.size, *digest.digests())
        if action.get("corrupt_md5"):
            item.reported_md5 = hashlib.md5(b"corrupt-md5:" + item.md5.encode()).hexdigest()
        res = emu.file_resource(item, principal)
    return json_response(200, apply_field_mask(res, mask), pretty=_pretty(req))


# =============================================================================
# 12. SendGrid v3 mail send (DOC_SENDGRID_SEND)
# =============================================================================

_EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _sg_error(message, field, anchor):
    return {"message": message, "field": field,
            "help": None if anchor is None else "%s#%s" % (DOC_SENDGRID_ERRORS, anchor)}


def mail_send(emu: Emulator, req: Request) -> HttpResponse:
    """POST /v3/mail/send: API-key auth, minimal validation, 202 on success.

    Errors use SendGrid's `{"errors": [{message, field, help}]}` body and
    list every problem found, as SendGrid does."""
    match = re.fullmatch(r"\s*[Bb]earer\s+(\S+)\s*", req.header("Authorization") or "")
    with emu.lock:
        ok = bool(match) and match.group(1) in emu.sendgrid_keys
    if not ok:
        raise SendGridError(401, [{
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "field": None, "help": None}])
    try:
        msg = json.loads(req.body.decode("utf-8"))
        if not isinstance(msg, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise SendGridError(400, [{"message": "Bad Request", "field": None, "help": None}])
    errors = []
    has_template = bool(msg.get("template_id"))
    pers = msg.get("personalizations")
    if not isinstance(pers, list) or not pers:
        errors.append(_sg_error("The personalizations field is required and must have at least "
                                "one personalization.", "personalizations",
                                "message.personalizations"))
        pers = []
    every_has_subject = bool(pers)
    for i, p in enumerate(pers):
        if not isinstance(p, dict):
            errors.append(_sg_error("Invalid personalization.", "personalizations.%d" % i,
                                    "message.personalizations"))
            every_has_subject = False
            continue
        if not p.get("subject"):
            every_has_subject = False
        tos = p.get("to")
        if not isinstance(tos, list) or not tos:
            errors.append(_sg_error(
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                "personalizations.%d.to" % i, "message.recipient-errors"))
            continue
        for j, to in enumerate(tos):
            email = to.get("email") if isinstance(to, dict) else None
            if not isinstance(email, str) or not _EMAIL_RE.match(email):
                errors.append(_sg_error("Does not contain a valid address.",
                                        "personalizations.%d.to.%d.email" % (i, j),
                                        "message.personalizations.to"))
    sender = msg.get("from")
    sender_email = sender.get("email") if isinstance(sender, dict) else None
    if not sender_email:
        errors.append(_sg_error(
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter.  e.g. "
            "{\"email\" : \"example@example.com\"}  or {\"email\" : \"example@example.com\", "
            "\"name\" : \"Example Recipient\"}.", "from.email", "message.from"))
    elif not isinstance(sender_email, str) or not _EMAIL_RE.match(sender_email):
        errors.append(_sg_error("The from email does not contain a valid address.",
                                "from.email", "message.from"))
    if not msg.get("subject") and not every_has_subject and not has_template:
        errors.append(_sg_error(
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject "
            "defined.", "subject", "message.subject"))
    content = msg.get("content")
    if content is None and not has_template or (content is not None and
                                                (not isinstance(content, list) or not content)):
        errors.append(_sg_error(
            "Unless a valid template_id is provided, the content parameter is required. There "
            "must be at least one defined content block. We typically suggest both text/plain "
            "and text/html blocks are included, but only one block is required.",
            "content", "message.content"))
    for i, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict) or not block.get("type"):
            errors.append(_sg_error("The content type must be provided for every content "
                                    "block.", "content.%d.type" % i, "message.content.type"))
        if not isinstance(block, dict) or not isinstance(block.get("value"), str) \
                or not block.get("value"):
            errors.append(_sg_error("The content value must be a string at least one "
                                    "character in length.", "content.%d.value" % i,
                                    "message.content.value"))
    if errors:
        raise SendGridError(400, errors)
    message_id = secrets.token_urlsafe(16)
    with emu.lock:
        stored = dict(msg)
        stored["received_at"] = rfc3339(now_ms())
        stored["message_id"] = message_id
        emu.mail.append(stored)
    return HttpResponse(202, b"", [("X-Message-Id", message_id)])


# =============================================================================
# 13. Control API (/__emulator/..., not Google)
# =============================================================================

def _load_public_key(spec: dict):
    pem = spec.get("public_key_pem")
    try:
        if pem:
            data = pem.encode()
            if b"BEGIN CERTIFICATE" in data:
                key = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = serialization.load_pem_public_key(data)
        elif spec.get("private_key"):
            key = serialization.load_pem_private_key(spec["private_key"].encode(),
                                                     password=None).public_key()
        else:
            raise ControlError(400, "public_key_pem (or private_key) is required")
    except ValueError as exc:
        raise ControlError(400, "cannot load key: %s" % exc)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ControlError(400, "service account keys must be RSA")
    return key


def _require(spec, *names):
    for name in names:
        if not spec.get(name):
            raise ControlError(400, "%s is required" % name)


def control(emu: Emulator, req: Request) -> HttpResponse:
    """Dispatch /__emulator/... (JSON in, JSON out, no auth)."""
    path = req.path[len("/__emulator"):].rstrip("/") or "/"
    method = req.method
    spec = {}
    if req.body:
        try:
            spec = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ControlError(400, "body must be JSON")
        if not isinstance(spec, dict):
            raise ControlError(400, "body must be a JSON object")

    def ok(obj=None, status=200):
        return json_response(status, {"ok": True} if obj is None else obj, pretty=False)

    with emu.lock:
        if path == "/health" and method == "GET":
            return ok({"ok": True, "port": emu.port})
        if path == "/reset" and method == "POST":
            emu.reset()
            return ok()
        if path == "/config":
            if method == "POST":
                rate = spec.get("upload_bytes_per_second")
                if rate is not None and (isinstance(rate, bool)
                                         or not isinstance(rate, (int, float)) or rate <= 0):
                    raise ControlError(400, "upload_bytes_per_second must be a positive "
                                       "number or null")
                for key, value in spec.items():
                    emu.config[key] = value
            return ok(dict(emu.config))
        if path == "/service_accounts" and method == "POST":
            _require(spec, "client_email")
            emu.service_accounts[spec["client_email"].lower()] = {
                "client_email": spec["client_email"], "public_key": _load_public_key(spec),
                "dwd": bool(spec.get("dwd", False)), "dwd_scopes": spec.get("dwd_scopes"),
                "project": spec.get("project_id")
                or service_account_project(spec["client_email"])}
            if spec.get("display_name"):
                emu.display_names[spec["client_email"].lower()] = spec["display_name"]
            return ok()
        if path == "/authorized_users" and method == "POST":
            _require(spec, "client_id", "client_secret", "refresh_token", "email")
            emu.authorized_users[spec["client_id"]] = {
                "client_secret": spec["client_secret"], "refresh_token": spec["refresh_token"],
                "email": spec["email"], "revoked": bool(spec.get("revoked", False)),
                "client_project_disabled": bool(spec.get("client_project_disabled", False)),
                "scopes": spec.get("scopes") or [_S + "drive"],
                "project": spec.get("project") or oauth_client_project(spec["client_id"])}
            if spec.get("display_name"):
                emu.display_names[spec["email"].lower()] = spec["display_name"]
            return ok()
        if path == "/sendgrid_keys" and method == "POST":
            _require(spec, "key")
            emu.sendgrid_keys.add(spec["key"])
            return ok()
        if path == "/shared_drives":
            if method == "GET":
                return ok({"drives": [{"id": d.id, "name": d.name, "members": d.members}
                                      for d in emu.drives.values()]})
            if method == "POST":
                return ok(_control_shared_drive(emu, spec))
        m = re.fullmatch(r"/shared_drives/([^/]+)/members", path)
        if m and method == "POST":
            drive = emu.drives.get(m.group(1))
            if drive is None:
                raise ControlError(404, "no such shared drive")
            for email, role in spec.items():
                if role is None:
                    drive.members.pop(email, None)
                elif role not in SHARED_DRIVE_ROLES:
                    raise ControlError(400, "bad role %r" % role)
                else:
                    drive.members[email] = role
            return ok({"id": drive.id, "members": drive.members})
        if path == "/folders" and method == "POST":
            return ok(_control_create(emu, spec, folder=True))
        if path == "/files":
            if method == "POST":
                return ok(_control_create(emu, spec, folder=False))
            if method == "GET":
                return ok({"files": [emu.control_resource(it)
                                     for it in sorted(emu.items.values(),
                                                      key=lambda i: (i.created_ms, i.id))
                                     if not it.root_kind]})
        m = re.fullmatch(r"/files/([^/]+)(/content|/corrupt|/truncate|/abusive)?", path)
        if m:
            item = emu.items.get(m.group(1))
            if item is None:
                raise ControlError(404, "no such file")
            if m.group(2) is None and method == "GET":
                return ok(emu.control_resource(item))
            if m.group(2) == "/content" and method == "GET":
                if item.content is None:
                    raise ControlError(404, "content not retained")
                return HttpResponse(200, bytes(item.content),
                                    [("Content-Type", "application/octet-stream")])
            if m.group(2) == "/content" and method == "POST":
                data = base64.b64decode(spec.get("content_b64", ""))
                digest = ContentDigest(keep=True)
                digest.append(data)
                item.set_content(bytearray(data), digest.size, *digest.digests())
                return ok(emu.control_resource(item))
            if m.group(2) == "/corrupt" and method == "POST":
                if not item.content:
                    raise ControlError(400, "file has no stored content")
                offset = int(spec.get("offset", 0))
                if not 0 <= offset < len(item.content):
                    raise ControlError(400, "offset out of range")
                item.content[offset] ^= 0xFF
                return ok()
            if m.group(2) == "/abusive" and method == "POST":
                item.abusive = bool(spec.get("abusive", True))
                return ok()
            if m.group(2) == "/truncate" and method == "POST":
                if item.content is None:
                    raise ControlError(400, "file has no stored content")
                size = int(spec.get("size", -1))
                if not 0 <= size <= len(item.content):
                    raise ControlError(400, "size out of range")
                data = item.content[:size]
                digest = ContentDigest(keep=True)
                digest.append(bytes(data))
                item.set_content(data, digest.size, *digest.digests())
                return ok(emu.control_resource(item))
        if path == "/sessions" and method == "GET":
            out = []
            for s in emu.sessions.values():
                expire_if_idle(emu, s)
                out.append({"id": s.id, "state": s.state, "stored_bytes": s.stored,
                            "metadata": s.metadata, "file_id": s.file_id,
                            "total": s.total, "declared_length": s.declared_length,
                            "principal": s.principal.email, "created_at": s.created_at})
            return ok({"sessions": out})
        if path == "/sessions/expire" and method == "POST":
            for s in emu.sessions.values():
                if s.state == "open":
                    s.state = "expired"
                    s.digest.data = None
            return ok()
        if path == "/tokens/expire" and method == "POST":
            for tok in emu.tokens.values():
                tok.revoked = True
            return ok()
        if path == "/faults":
            if method == "POST":
                rules = spec.get("rules")
                if not isinstance(rules, list):
                    raise ControlError(400, "rules must be a list")
                emu.faults.extend(FaultRule(r) for r in rules)
                return ok({"rules": [r.to_json() for r in emu.faults]})
            if method == "DELETE":
                emu.faults = []
                return ok()
            if method == "GET":
                return ok({"rules": [r.to_json() for r in emu.faults]})
        if path == "/requests":
            if method == "GET":
                return ok({"requests": list(emu.requests)})
            if method == "DELETE":
                emu.requests = []
                return ok()
        if path == "/mail":
            if method == "GET":
                return ok({"messages": list(emu.mail)})
            if method == "DELETE":
                emu.mail = []
                return ok()
    raise ControlError(404, "unknown control endpoint %s %s" % (method, req.path))


def _control_shared_drive(emu: Emulator, spec: dict) -> dict:
    drive_id = spec.get("id") or new_drive_id()
    if drive_id in emu.drives or drive_id in emu.items:
        raise ControlError(409, "id already in use")
    members = dict(spec.get("members") or {})
    for email, role in members.items():
        if role not in SHARED_DRIVE_ROLES:
            raise ControlError(400, "bad role %r for %s" % (role, email))
    created = emu.next_created_ms()
    drive = SharedDrive(drive_id, spec.get("name") or "Shared drive", members, created)
    emu.drives[drive_id] = drive
    root = Item(drive_id, drive.name, FOLDER_MIME, None, drive_id, None, created)
    root.root_kind = "shared_drive"
    emu.items[drive_id] = root
    return {"id": drive_id, "name": drive.name, "members": members}


def _control_create(emu: Emulator, spec: dict, folder: bool) -> dict:
    """Create a folder or file directly, bypassing Drive's permission checks."""
    parents = spec.get("parents") or ([spec["parent"]] if spec.get("parent") else [])
    drive_id = spec.get("drive_id")
    if parents:
        parent = emu.items.get(parents[0])
        if parent is None:
            raise ControlError(404, "no such parent %s" % parents[0])
        if not parent.is_folder:
            raise ControlError(400, "parent is not a folder")
    elif drive_id:
        parent = emu.items.get(drive_id)
        if parent is None or parent.root_kind != "shared_drive":
            raise ControlError(404, "no such shared drive %s" % drive_id)
    else:
        owner = spec.get("owner")
        if not owner:
            raise ControlError(400, "give parents/parent, drive_id, or owner (My Drive root)")
        parent = emu.my_drive_root(owner)
    if parent.drive_id:
        owner = None
    else:
        owner = spec.get("owner") or parent.owner
    item_id = spec.get("id") or new_file_id()
    if item_id in emu.items:
        raise ControlError(409, "id already in use")
    created = None
    if spec.get("createdTime"):
        try:
            created = parse_rfc3339(spec["createdTime"])
        except ValueError:
            raise ControlError(400, "bad createdTime")
    mime = FOLDER_MIME if folder else (spec.get("mimeType") or DEFAULT_MIME)
    item = Item(item_id, spec.get("name") or ("Untitled folder" if folder else "Untitled"),
                mime, parent.id, parent.drive_id, owner,
                created if created is not None else emu.next_created_ms())
    item.last_modifier = owner
    if spec.get("modifiedTime"):
        item.modified_ms = parse_rfc3339(spec["modifiedTime"])
    item.creator_project = spec.get("project") or ANY_PROJECT
    if spec.get("appProperties"):
        item.app_properties = {item.creator_project: dict(spec["appProperties"])}
    item.properties = dict(spec.get("properties") or {})
    item.description = spec.get("description")
    perms = dict(spec.get("permissions") or {})
    allowed = SHARED_FOLDER_ROLES if parent.drive_id else MY_DRIVE_ROLES
    for email, role in perms.items():
        if role not in allowed:
            raise ControlError(400, "bad role %r for %s" % (role, email))
    item.permissions = perms
    if spec.get("trashed"):
        item.trashed = item.explicitly_trashed = True
        item.trashed_ms = now_ms()
    if not folder and item.is_binary:
        try:
            raw = base64.b64decode(spec.get("content_b64") or "", validate=True)
        except ValueError:
            raise ControlError(400, "content_b64 is not base64")
        digest = ContentDigest(True)
        digest.append(raw)
        item.set_content(digest.data, digest.size, *digest.digests())
    emu.items[item.id] = item
    return emu.control_resource(item)


# =============================================================================
# 14. HTTP plumbing: routing, body reading, fault actions, response writing
# =============================================================================

def route(emu: Emulator, req: Request) -> HttpResponse:
    """Map a (non-control) request to its handler."""
    path, method = req.path, req.method
    if path == "/token":
        if method != "POST":
            raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
        return handle_token(emu, req)
    if path == "/v3/mail/send":
        if method != "POST":
            raise SendGridError(405, [{"message": "method not allowed", "field": None,
                                       "help": None}])
        return mail_send(emu, req)
    if path.rstrip("/") in UPLOAD_PATHS:
        if "upload_id" in req.query:
            if method in ("PUT", "POST"):
                return upload_session_put(emu, req)
            if method == "DELETE":
                return upload_session_cancel(emu, req)
            raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
        if method != "POST":
            raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
        upload_type = req.param("uploadType")
        if upload_type is None:
            raise ApiError(400, "badRequest", "Upload requests must include an uploadType URL "
                           "parameter and a URL path beginning with /upload/",
                           location="uploadType", location_type="parameter")
        if upload_type == "resumable":
            return upload_initiate(emu, req)
        return upload_simple(emu, req)
    if path.startswith(UPLOAD_PATHS[0] + "/") or path.startswith(UPLOAD_PATHS[1] + "/"):
        authenticate(emu, req, WRITE_SCOPES)
        raise ApiError(501, "notImplemented",
                       "Updating file content (files.update with media) is not emulated.")
    if is_drive_root_path(req):
        if method == "GET":
            return files_list(emu, req)
        if method == "POST":
            if req.param("uploadType"):
                raise ApiError(400, "badRequest", "Upload requests must include an uploadType "
                               "URL parameter and a URL path beginning with /upload/")
            return files_create(emu, req)
        raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
    m = re.fullmatch(r"/drive/v3/files/([^/]+)", path)
    if m:
        file_id = m.group(1)
        if file_id == "trash" and method == "DELETE":
            return files_empty_trash(emu, req)
        if method == "GET":
            if req.param("alt") == "media":
                return files_get_media(emu, req, file_id)
            return files_get(emu, req, file_id)
        if method in ("PATCH", "PUT"):
            return files_update(emu, req, file_id)
        if method == "DELETE":
            return files_delete(emu, req, file_id)
        raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
    if path.rstrip("/") == "/drive/v3/about":
        if method != "GET":
            raise ApiError(405, "methodNotAllowed", "Method Not Allowed")
        return about_get(emu, req)
    raise ApiError(404, "notFound", "Not Found")


class _ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GoogleEmulator/1.0"
    sys_version = ""
    emu: Emulator = None  # set on the subclass built by make_server
    verbose = False
    # Idle/read timeout per connection: a request whose body never arrives (or
    # an idle keep-alive connection) is closed after this many seconds.
    timeout = 300

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # -- input -------------------------------------------------------------------

    def _read_exact(self, n):
        rate = self._upload_rate
        if rate and n:  # a throttled upload: the body arrives piece by piece
            pieces = []
            for start in range(0, n, UploadThrottle.PIECE):
                size = min(UploadThrottle.PIECE, n - start)
                self.emu.upload_throttle.wait_for(size, rate)
                pieces.append(self.rfile.read(size))
                if len(pieces[-1]) != size:
                    raise _ClientGone()
            return b"".join(pieces)
        data = self.rfile.read(n)
        if len(data) != n:
            raise _ClientGone()
        return data

    def _read_body(self):
        """Read a request body by Content-Length or chunked transfer coding (an upload's at
        the configured `upload_bytes_per_second`)."""
        self._upload_rate = None
        if urlsplit(self.path).path.rstrip("/") in UPLOAD_PATHS:
            with self.emu.lock:
                rate = self.emu.config.get("upload_bytes_per_second")
            self._upload_rate = float(rate) if rate else None
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _ClientGone()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        trailer = self.rfile.readline(65537)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out), True
                out += self._read_exact(size)
                self._read_exact(2)
        length = self.headers.get("Content-Length")
        if length is None:
            return b"", False
        n = int(length)
        if n < 0:
            raise ValueError("negative Content-Length")
        return (self._read_exact(n) if n else b""), False

    # -- output ------------------------------------------------------------------

    def _send(self, resp: HttpResponse, body_limit=None):
        self.send_response(resp.status, resp.reason_phrase)
        for key, value in resp.headers:
            self.send_header(key, value)
        body = resp.body if self.command != "HEAD" else b""
        if resp.status not in (204, 304):  # RFC 9110: no Content-Length on 204
            self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body_limit is not None:
            body = body[:body_limit]
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def _drop(self):
        """Close the TCP connection without (further) response bytes."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- main path ---------------------------------------------------------------

    def _handle(self):
        emu = self.emu
        try:
            body, chunked = self._read_body()
        except (_ClientGone, OSError):  # disconnects, resets, read timeouts
            self.close_connection = True
            return
        except ValueError:
            self.close_connection = True
            self._send(ApiError(400, "badRequest", "Malformed request body framing").response())
            return
        req = Request(self.command, self.path, self.headers, body, chunked)

        if req.path.startswith("/__emulator/") or req.path == "/__emulator":
            try:
                resp = control(emu, req)
            except ControlError as exc:
                resp = json_response(exc.status, {"error": exc.message}, pretty=False)
            except Exception as exc:  # emulator bug: report, keep serving
                traceback.print_exc()
                resp = json_response(500, {"error": repr(exc)}, pretty=False)
            try:
                self._send(resp)
            except OSError:
                self.close_connection = True
            return

        req.op = classify(emu, req)
        entry = log_request(emu, req)
        rule = select_fault(emu, req)
        action = rule.action if rule else {}
        if rule:
            with emu.lock:
                entry["fault"] = rule.describe()
            req.fault = action

        if action.get("delay_ms"):
            time.sleep(float(action["delay_ms"]) / 1000.0)
        if action.get("hang_ms") is not None:
            time.sleep(float(action["hang_ms"]) / 1000.0)
            self._drop()
            return
        if action.get("drop") == "before":
            self._drop()
            return
        if action.get("expire_tokens"):
            with emu.lock:
                for tok in emu.tokens.values():
                    tok.revoked = True
        if "status" in action:
            resp = fault_status_response(req.op, action)
        else:
            resp = self._process(req)

        if action.get("drop") == "after":
            self._drop()
            return
        with emu.lock:
            entry["status"] = resp.status
        if action.get("drop") == "mid_body":
            try:
                self._send(resp, body_limit=len(resp.body) // 2)
            except OSError:
                pass
            self._drop()
            return
        try:
            self._send(resp)
        except OSError:  # the client went away mid-response
            self.close_connection = True

    def _process(self, req: Request) -> HttpResponse:
        emu = self.emu
        try:
            return route(emu, req)
        except ApiError as exc:
            return exc.response(_pretty(req))
        except OAuthError as exc:
            return exc.response()
        except SendGridError as exc:
            return exc.response()
        except Exception as exc:  # emulator bug: answer like a backend error
            traceback.print_exc()
            return ApiError(500, "backendError", "Backend Error: %r" % exc).response()


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def make_server(emu: Emulator, host: str, port: int, verbose=False) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"emu": emu, "verbose": verbose})
    server = EmulatorServer((host, port), handler)
    emu.host = host
    emu.port = server.server_address[1]
    return server


# =============================================================================
# 15. Entry point
# =============================================================================

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="also write the bound port to this file")
    parser.add_argument("--discard-content", action="store_true",
                        help="keep only size and digests of uploaded content (benchmarks)")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    emu = Emulator(discard_content=args.discard_content)
    server = make_server(emu, args.host, args.port, args.verbose)
    if args.port_file:
        with open(args.port_file, "w") as fh:
            fh.write("%d\n" % emu.port)
    sys.stdout.write("LISTENING http://%s:%d/\n" % (args.host, emu.port))
    sys.stdout.flush()

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
