"""The plain-socket engine push's pure parts: the JSON message stream, the docker config check, the header."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from pipeline.tools.engine_socket import auth_header, docker_config_has_auth, json_messages


def test_messages_split_across_reads_and_several_per_line_all_come_out_in_order() -> None:
    chunks = [b'{"status":"Preparing","id":"a"}\r\n{"status":"Pus', b'hed","id":"a"}\r\n',
              b'{"status":"x: digest: sha256:ab size: 1"}{"aux":{"Digest":"sha256:ab"}}\r\n', b"\r\n"]
    got = list(json_messages(iter(chunks)))
    assert [m.get("status") for m in got] == ["Preparing", "Pushed", "x: digest: sha256:ab size: 1", None]
    assert got[-1] == {"aux": {"Digest": "sha256:ab"}}


def test_docker_config_auth_is_found_by_registry_host(tmp_path: Path) -> None:
    assert not docker_config_has_auth("127.0.0.1:5000", tmp_path)                 # no config at all
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {"https://other:5000/v1/": {"auth": "eDp5"}}}))
    assert not docker_config_has_auth("127.0.0.1:5000", tmp_path)
    cfg.write_text(json.dumps({"auths": {"http://127.0.0.1:5000": {"auth": "eDp5"}}}))
    assert docker_config_has_auth("127.0.0.1:5000", tmp_path)
    cfg.write_text(json.dumps({"credHelpers": {"127.0.0.1:5000": "pass"}}))
    assert docker_config_has_auth("127.0.0.1:5000", tmp_path)
    cfg.write_text(json.dumps({"credsStore": "desktop"}))                       # a store answers for any host
    assert docker_config_has_auth("127.0.0.1:5000", tmp_path)
    cfg.write_text("{not json")                                                 # let docker-py decide
    assert docker_config_has_auth("127.0.0.1:5000", tmp_path)


def test_auth_header_is_url_safe_base64_json_as_the_engine_reads_it() -> None:
    header = auth_header("ci", "s3cr?t>>", "127.0.0.1:5000")
    assert "+" not in header and "/" not in header
    assert json.loads(base64.urlsafe_b64decode(header)) == {"username": "ci", "password": "s3cr?t>>",
                                                             "serveraddress": "127.0.0.1:5000"}


def test_a_credentialed_pull_names_the_image_as_the_engine_api_takes_it() -> None:
    """smoke's pull of a reused image by digest (and a tag, for completeness) splits as `fromImage` + `tag`: a
    registry port is part of the repository, never a tag."""
    from pipeline.tools.docker import split_pull_ref

    digest = "sha256:" + "a" * 64
    assert split_pull_ref(f"127.0.0.2:5443/veza-dev/veza-docs@{digest}") == ("127.0.0.2:5443/veza-dev/veza-docs",
                                                                             digest)
    assert split_pull_ref("127.0.0.2:5443/veza/veza-docs:0.1.1") == ("127.0.0.2:5443/veza/veza-docs", "0.1.1")
    assert split_pull_ref("127.0.0.2:5443/veza/veza-docs") == ("127.0.0.2:5443/veza/veza-docs", None)
