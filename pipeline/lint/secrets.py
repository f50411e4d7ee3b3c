"""Is this a secret written in a file? Judged by the value and its context, never by a name alone.

Two ways a literal is a secret (rule VZ003):

- **by its value**, whatever it is called: a URL with a password in its user-info part
  (`postgres://app:hunter2@db/app`, RFC 3986 section 3.2.1), a PEM private key block (RFC 7468), or a
  token in a format its issuer publishes (AWS access key IDs, GitHub, GitLab, Slack, Stripe, Google API
  keys, npm tokens, JSON Web Tokens);
- **by its name and value together**: the name says it holds a secret as a whole word (`DB_PASSWORD`,
  `API_TOKEN`, `SIGNING_KEY`; not `TOKENIZERS_PARALLELISM`, `KEYBOARD`, `TOKEN_TTL`) and the value is a
  literal that can be one (not a `${VAR}` reference, not empty, not a boolean, number, duration or path).

Pure functions: text in, a reason (or None) out.
"""

from __future__ import annotations

import re
from typing import Any

# ${VAR}, ${VAR:?error}, $VAR: a reference resolved at run time. ${VAR:-default} keeps a literal default.
REFERENCE = re.compile(r"\$(\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}|[A-Za-z_][A-Za-z0-9_]*)")
# Helm/Go templates and Kubernetes $(VAR) expansion are references too.
OTHER_REFERENCE = re.compile(r"\{\{.*\}\}|\$\([A-Za-z_][A-Za-z0-9_]*\)")

SECRET_WORDS = {"PASSWORD", "PASSWORDS", "PASSWD", "PASSPHRASE", "PWD", "SECRET", "SECRETS", "TOKEN", "TOKENS",
                "CREDENTIAL", "CREDENTIALS", "APIKEY", "PRIVATEKEY", "ACCESSKEY", "SECRETKEY"}
KEY_QUALIFIERS = {"API", "ACCESS", "PRIVATE", "SECRET", "SIGNING", "ENCRYPTION", "MASTER", "LICENSE", "AUTH",
                  "CLIENT", "HMAC", "SSH"}
# a last word that makes the variable hold something about a secret, not the secret itself
REFERENCE_WORDS = {"FILE", "PATH", "DIR", "REF", "NAME", "ID", "ENV", "VAR", "LENGTH", "LEN", "TTL", "TIMEOUT",
                   "EXPIRY", "EXPIRES", "HEADER", "TYPE", "FIELD", "URL", "URI", "ENDPOINT", "HOST", "PORT",
                   "ENABLED", "DISABLED", "MODE", "POLICY", "VERSION", "COUNT", "SIZE", "FORMAT", "ALGORITHM",
                   "ISSUER", "AUDIENCE", "SCOPE", "SCOPES", "PROVIDER", "STORE", "BACKEND"}
NOT_SECRET_VALUES = {"true", "false", "yes", "no", "on", "off", "none", "null", "nil", "enabled", "disabled",
                     "required", "optional", "auto", "default"}
NUMBER_OR_DURATION = re.compile(r"[+-]?\d+(\.\d+)?([smhdw]|ms|us|ns|[kKMGT]i?)?")

URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://([^:/?#@\s\"']+):([^@/?#\s\"']+)@")
TOKEN_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a PEM private key", re.compile(r"-----BEGIN ((RSA|EC|DSA|OPENSSH|ENCRYPTED) )?PRIVATE KEY-----")),
    ("an AWS access key ID", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})\b")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a Stripe secret key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{20,}\b")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
)


def name_words(name: str) -> list[str]:
    """`dbPassword` / `DB_PASSWORD` / `db.password` / `db-password` → ["DB", "PASSWORD"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w.upper() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def is_secret_name(name: str) -> bool:
    """The name says the variable holds a secret itself (whole words; a reference-like last word excludes it)."""
    words = name_words(name)
    if not words or words[-1] in REFERENCE_WORDS:
        return False
    if any(w in SECRET_WORDS for w in words):
        return True
    for i, w in enumerate(words):
        if w == "KEY" and (i in (0, len(words) - 1) or words[i - 1] in KEY_QUALIFIERS):
            return True
    return False


def is_reference(value: str) -> bool:
    return bool(REFERENCE.search(value) or OTHER_REFERENCE.search(value))


def could_be_secret(value: Any) -> bool:
    """A literal that could be a secret: not empty, not a reference, a boolean, a number, a duration or a path."""
    if value is None or isinstance(value, bool | int | float):
        return False
    text = str(value).strip().strip("\"'")
    if not text or is_reference(text) or text.lower() in NOT_SECRET_VALUES:
        return False
    if NUMBER_OR_DURATION.fullmatch(text) or text[0] in "[{~":   # numbers, durations, structures, YAML null
        return False
    return not (text.startswith("/") and " " not in text)


def secret_in_value(value: Any) -> str | None:
    """What secret the value itself carries (e.g. "a password in a URL"), whatever its name; None if none."""
    if value is None or isinstance(value, bool | int | float):
        return None
    text = str(value)
    for m in URL_PASSWORD.finditer(text):
        password = m.group(2)
        if not is_reference(password) and password.strip("*"):
            return "a password in a URL"
    for what, pattern in TOKEN_FORMATS:
        if pattern.search(text):
            return what
    return None


CONFIG_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*[:=]\s*(\S.*?)\s*[;,]?\s*$")


def judge_text(text: str) -> list[tuple[int, str]]:
    """Secrets in a configuration file's text (properties, .env, INI, YAML, TOML lines `key = value` or
    `key: value`): (0-based line index, reason) for each line whose key and value judge as a secret."""
    out: list[tuple[int, str]] = []
    for i, line in enumerate(text.split("\n")):
        if line.lstrip().startswith(("#", "//", ";")):
            continue
        m = CONFIG_LINE.match(line)
        reason = judge(m.group(1), m.group(2)) if m else None
        if reason is None and not m:
            found = secret_in_value(line)
            reason = f"holds {found}" if found else None
        if reason:
            out.append((i, reason))
    return out


def judge(name: str, value: Any) -> str | None:
    """Why `name=value` is a literal secret, or None. The reason names what was found, never the value."""
    found = secret_in_value(value)
    if found:
        return f"{name} holds {found}" if name else f"holds {found}"
    if name and is_secret_name(name) and could_be_secret(value):
        return f"{name} holds a literal secret value"
    return None
