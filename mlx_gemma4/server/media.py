"""Media referenced by OpenAI message parts → bytes in memory (data: URLs, allowed local files).

Nothing is fetched from the network: the server runs offline, so http(s) URLs are refused with a
message that says how to send the bytes instead.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import bad_request


def decode_base64(data: object, param: str) -> bytes:
    """Strict base64 (whitespace tolerated) → bytes; a 400 naming ``param`` otherwise."""
    if not isinstance(data, str) or not data.strip():
        raise bad_request(f"{param}: expected a non-empty base64 string", param)
    try:
        out = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"{param}: invalid base64 data ({e})", param) from None
    if not out:
        raise bad_request(f"{param}: the base64 data decodes to 0 bytes", param)
    return out


def read_data_url(url: str, param: str) -> bytes:
    """``data:[<type>];base64,<data>`` → bytes."""
    head, sep, payload = url.partition(",")
    if not sep:
        raise bad_request(f"{param}: malformed data: URL (no comma)", param)
    if not head.endswith(";base64"):
        raise bad_request(f"{param}: only base64 data: URLs are supported (data:<type>;base64,...)", param)
    return decode_base64(payload, param)


def read_local_file(url: str, allow_dir: Path | None, param: str) -> bytes:
    """``file://`` URL → bytes, only inside the directory the server was started with."""
    if allow_dir is None:
        raise bad_request(f"{param}: file:// URLs are disabled; start the server with --allow-local-files DIR "
                          "or send the bytes as a data: URL", param)
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"{param}: file:// URLs must name a local path (file:///path)", param)
    path = Path(unquote(parsed.path)).resolve()
    root = allow_dir.resolve()
    if not path.is_relative_to(root):
        raise bad_request(f"{param}: {path} is outside the allowed directory {root}", param)
    if not path.is_file():
        raise bad_request(f"{param}: no such file: {path}", param)
    return path.read_bytes()


def read_media_url(url: object, allow_dir: Path | None, param: str) -> bytes:
    """An image/video URL of a message part → its bytes."""
    if not isinstance(url, str) or not url:
        raise bad_request(f"{param}: expected a URL string", param)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return read_data_url(url, param)
    if scheme == "file":
        return read_local_file(url, allow_dir, param)
    if scheme in ("http", "https"):
        raise bad_request(f"{param}: remote URLs are not fetched (this server runs offline); "
                          "send the bytes as a data: URL (data:image/png;base64,...)", param)
    raise bad_request(f"{param}: unsupported URL scheme {scheme or url[:20]!r} (use a data: URL)", param)
