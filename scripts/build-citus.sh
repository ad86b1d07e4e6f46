#!/usr/bin/env bash
# Build and install the Citus extension for PostgreSQL 15 from source, once.
# Debian has no Citus package, so the Citus topology (STEPLEDGER_CITUS_WORKERS >= 1) and its test
# stage build it from the source archive kept beside the repository (../shared/citus/, see
# scripts/citus-source.sh). Skips at once when Citus 13.2 is already installed; about 4 minutes on
# two cores otherwise. A failed build fails this script (and so the caller).
# Usage: scripts/build-citus.sh [--if-source]
#   --if-source: when the source cannot be found, say so in one line and exit 0 (the test set-up of
#                a clone without ../shared); without it a missing source is an error.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { echo "build-citus: $*"; }
die() { echo "build-citus: error: $*" >&2; exit 1; }

if_source=0
for arg in "$@"; do
    case "$arg" in
        --if-source) if_source=1 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg" ;;
    esac
done

version=13.2.2
pg_major=15
pg_lib=/usr/lib/postgresql/$pg_major/lib
pg_ext=/usr/share/postgresql/$pg_major/extension

citus_installed() {
    [[ -f $pg_lib/citus.so && -f $pg_ext/citus.control ]] \
        && grep -q "^default_version = '13\.2-" "$pg_ext/citus.control"
}

if citus_installed; then
    say "Citus $version is installed ($pg_lib/citus.so)"
    exit 0
fi

# shellcheck source=scripts/citus-source.sh
source "$repo/scripts/citus-source.sh"
if ! src_dir="$(citus_source_dir "$repo")"; then
    searched="$(citus_source_candidates "$repo" | paste -sd, - | sed 's/,/, /g')"
    msg="Citus is not installed and its source is missing: expected citus-$version.tar.gz in"
    msg+=" ../shared/citus/ beside the repository (searched: $searched);"
    msg+=" or set STEPLEDGER_CITUS_SOURCE to the folder that holds it"
    if [[ $if_source -eq 1 ]]; then
        say "skipped: $msg"
        exit 0
    fi
    die "$msg"
fi
archive="$src_dir/citus-$version.tar.gz"
expected_sha=dd2453caec20a830e5e63f1def5c5a98cb6f57ae510407cdcd800916fcdab430
actual_sha="$(sha256sum "$archive" | cut -d' ' -f1)"
[[ $actual_sha == "$expected_sha" ]] || die "$archive: sha256 $actual_sha, expected $expected_sha"

[[ $(id -u) -eq 0 ]] || die "building Citus installs into $pg_lib: run this script as root"

# --- build dependencies (apt) ----------------------------------------------------------------
build_packages=(postgresql-server-dev-$pg_major build-essential liblz4-dev libzstd-dev libkrb5-dev
                libselinux1-dev libxslt1-dev libpam0g-dev libssl-dev libreadline-dev)
missing=()
for p in "${build_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing build dependencies: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/stepledger-citus-apt.log 2>&1 \
        || die "apt-get install of the Citus build dependencies failed (see /tmp/stepledger-citus-apt.log)"
fi

# --- build -----------------------------------------------------------------------------------
build_root="$(mktemp -d /tmp/stepledger-citus-build.XXXXXX)"
trap 'rm -rf "$build_root"' EXIT
log=/tmp/stepledger-citus-build.log
started=$SECONDS
say "building Citus $version from $archive (about 4 minutes on 2 cores; log: $log)"
tar -xzf "$archive" -C "$build_root"
cd "$build_root/citus-$version"
# PostgreSQL 15.20's headers declare have_createdb_privilege(), which Citus 13.2.2 also defines for
# PostgreSQL < 16: apply the patch from the source folder only when the installed headers declare it.
if grep -q have_createdb_privilege "/usr/include/postgresql/$pg_major/server/commands/dbcommands.h"; then
    patch -s -p1 <"$src_dir/pg15-have_createdb_privilege.patch" || die "the have_createdb_privilege patch did not apply"
fi
# with_llvm=no: no LLVM bitcode for JIT inlining (the stack runs with jit = off); it would
# almost double the build time.
{
    ./configure --without-libcurl PG_CONFIG=/usr/lib/postgresql/$pg_major/bin/pg_config \
        && make -j"$(nproc)" with_llvm=no && make install with_llvm=no
} >"$log" 2>&1 || die "the Citus build failed (last lines of $log below)
$(tail -n 20 "$log")"
citus_installed || die "make install finished but $pg_lib/citus.so is still missing"
say "Citus $version installed in $((SECONDS - started)) s"
