"""Builder output → step events (BuildKit plain progress and legacy `Step N/M`), and the failing step's tail."""

from __future__ import annotations

from pipeline.tools.build_progress import BuildProgress, Step

# Real BuildKit output (docker CLI 20.10.24, DOCKER_BUILDKIT=1, --progress plain), shortened.
BUILDKIT_OK = """\
#1 [internal] load build definition from veza-backend-api.Dockerfile
#1 sha256:23763fa251e74cffd5120133593d637ea69c2172aaac52fb65e56a4ace6f32d4
#1 transferring dockerfile: 49B done
#1 DONE 0.0s

#4 [build 1/6] FROM docker.io/veza-local/golang:bookworm
#4 DONE 0.0s

#5 [build 2/6] WORKDIR /src
#5 sha256:ad968671b6a112d446a9e321fc204562b950825d2e9c46ecbff5cd472696d0ff
#5 CACHED

#9 [build 5/6] COPY *.go ./
#9 DONE 0.1s

#10 [build 6/6] RUN --mount=type=cache,id=veza-go-build,target=/root/.cache/go-build go build -v .
#10 0.512 veza/backend-api
#10 DONE 2.9s
"""

BUILDKIT_FAIL = """\
#4 [1/2] FROM docker.io/veza-local/debian:bookworm
#4 DONE 0.0s

#5 [2/2] RUN echo one && echo two && echo "boom: it broke" && exit 3
#5 sha256:e1ce4fa02361bc1da5ebc9a94ac8c2dc4e70907bfda72cadb9d9087a232995a6
#5 0.394 one
#5 0.395 two
#5 0.395 boom: it broke
#5 ERROR: executor failed running [/bin/sh -c echo one && echo two && echo "boom: it broke" && exit 3]: exit code: 3
------
 > [2/2] RUN echo one && echo two && echo "boom: it broke" && exit 3:
------
executor failed running [/bin/sh -c echo one && echo two && echo "boom: it broke" && exit 3]: exit code: 3
"""

LEGACY = """\
Sending build context to Docker daemon  4.096kB
Step 1/3 : FROM veza-local/debian:bookworm
 ---> 5de1366c60ff
Step 2/3 : COPY a /a
 ---> Using cache
 ---> 1b2c3d4e5f60
Step 3/3 : RUN false
 ---> Running in 0123456789ab
it failed here
The command '/bin/sh -c false' returned a non-zero code: 1
"""


def _feed(text: str) -> tuple[BuildProgress, list[Step]]:
    bp = BuildProgress()
    events = [ev for line in text.splitlines() for ev in bp.feed(line)]
    return bp, events


def test_buildkit_steps_cached_and_done() -> None:
    bp, events = _feed(BUILDKIT_OK)
    assert Step("[build 2/6] WORKDIR /src", "cached") in events
    assert Step("[build 5/6] COPY *.go ./", "done", 0.1) in events
    assert events[-1].state == "done" and events[-1].seconds == 2.9
    assert not any("[internal]" in ev.name for ev in events)   # BuildKit's own loading vertices are not steps
    assert bp.cached_steps() == ["[build 2/6] WORKDIR /src"]
    assert bp.failed is None


def test_buildkit_failure_tail_is_the_failing_step() -> None:
    bp, events = _feed(BUILDKIT_FAIL)
    assert events[-1] == Step('[2/2] RUN echo one && echo two && echo "boom: it broke" && exit 3', "failed")
    tail = bp.failure_tail()
    assert bp.failing_step() == '[2/2] RUN echo one && echo two && echo "boom: it broke" && exit 3'
    assert tail[0].startswith("[2/2] RUN echo one")
    assert tail[1:4] == ["one", "two", "boom: it broke"]
    assert "exit code: 3" in tail[-1]


def test_legacy_steps() -> None:
    bp, events = _feed(LEGACY)
    assert Step("[2/3] COPY a /a", "cached") in events
    assert Step("[3/3] RUN false", "running") in events
    assert bp.cached_steps() == ["[2/3] COPY a /a"]
    assert bp.failing_step() == "[3/3] RUN false"
    assert bp.failure_tail() == ["[3/3] RUN false:", "it failed here",
                                 "The command '/bin/sh -c false' returned a non-zero code: 1"]
