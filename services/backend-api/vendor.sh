#!/bin/sh
# Re-create vendor/ from Debian's packaged Go sources (/usr/share/gocode), as Debian builds Go software
# offline: no module proxy is reachable here. Run after changing a version below, then commit vendor/.
#   apt-get install golang-github-lib-pq-dev golang-github-gomodule-redigo-dev golang-github-golang-jwt-jwt-dev
# Each row: Debian package | module path (as go.mod names it) | version | source dir under gocode | packages.
set -eu
cd "$(dirname "$0")"
GOCODE=/usr/share/gocode/src
MODULES='golang-github-golang-jwt-jwt-dev|github.com/golang-jwt/jwt/v4|v4.4.3|github.com/golang-jwt/jwt|.
golang-github-gomodule-redigo-dev|github.com/gomodule/redigo|v1.8.3|github.com/gomodule/redigo|redis
golang-github-lib-pq-dev|github.com/lib/pq|v1.10.7|github.com/lib/pq|. oid scram'
rm -rf vendor
mkdir -p vendor
: > vendor/modules.txt
echo "$MODULES" | while IFS='|' read -r pkg mod ver src pkgs; do
    deb="$(dpkg-query -W -f='${Version}' "$pkg")"
    case "$deb" in "${ver#v}"-*|*:"${ver#v}"-*) ;; *) echo "$pkg is $deb, not $ver: update MODULES" >&2; exit 1 ;; esac
    gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$GOCODE/$src/go.mod")"
    printf '# %s %s\n## explicit; go %s\n' "$mod" "$ver" "$gover" >> vendor/modules.txt
    for p in $pkgs; do
        dest="vendor/$mod/$p"
        mkdir -p "$dest"
        # Sources only: no tests, no examples, no commands.
        find "$GOCODE/$src/$p" -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp {} "$dest/" \;
        if [ "$p" = . ]; then echo "$mod"; else echo "$mod/$p"; fi >> vendor/modules.txt
    done
    # Debian's copyright file carries the upstream licence text (the packages ship no LICENSE file).
    cp "/usr/share/doc/$pkg/copyright" "vendor/$mod/COPYRIGHT.debian"
done
