# Shared by scripts/up, scripts/test and .ci/run: find or install what Switchboard needs on a
# Debian machine that has only Python 3.11. Sourced, not run.

SB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SB_VENV=${SWITCHBOARD_VENV:-$SB_ROOT/.venv}

sb_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

sb_as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    sb_say "need root to run: $*"; return 1; fi
}

sb_apt_install() {
  sb_say "installing $* from Debian's packages"
  if [ -z "${SB_APT_UPDATED:-}" ]; then
    sb_as_root apt-get update -qq
    SB_APT_UPDATED=1
  fi
  sb_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Creates .venv if missing and installs the project with the given extras ("" or "dev").
sb_ensure_venv() {
  local extras=$1
  local python=${PYTHON:-python3}
  if [ ! -x "$SB_VENV/bin/python" ]; then
    if ! "$python" -m venv "$SB_VENV" 2>/dev/null; then
      rm -rf "$SB_VENV"
      sb_apt_install python3-venv
      "$python" -m venv "$SB_VENV"
    fi
  fi
  local spec="$SB_ROOT"
  [ -n "$extras" ] && spec="$SB_ROOT[$extras]"
  local stamp="$SB_VENV/.installed-$extras"
  if [ ! -f "$stamp" ] || [ "$SB_ROOT/pyproject.toml" -nt "$stamp" ]; then
    sb_say "installing Switchboard into $SB_VENV"
    "$SB_VENV/bin/python" -m pip install -q --upgrade pip
    "$SB_VENV/bin/python" -m pip install -q -e "$spec"
    touch "$stamp"
  fi
  export PATH="$SB_VENV/bin:$PATH"
}

# The tests start their own redis-server on a free port; they only need the binary.
sb_ensure_redis_binary() {
  command -v redis-server >/dev/null || sb_apt_install redis-server
}

# The TLS test makes a self-signed certificate with the openssl command.
sb_ensure_openssl() {
  command -v openssl >/dev/null || sb_apt_install openssl
}

# Finds a PostgreSQL server to create throwaway test databases on, starting or installing
# one when none answers, and exports SWITCHBOARD_TEST_POSTGRES_URL.
sb_ensure_postgres() {
  if [ -n "${SWITCHBOARD_TEST_POSTGRES_URL:-}" ]; then return; fi
  local tcp_url="postgresql://127.0.0.1:5432/test"
  if sb_pg_answers "$tcp_url"; then export SWITCHBOARD_TEST_POSTGRES_URL=$tcp_url; return; fi
  if ! command -v pg_ctlcluster >/dev/null; then sb_apt_install postgresql; fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  sb_say "starting PostgreSQL $version"
  sb_as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 30); do
    sb_as_root su postgres -c "psql -Atqc 'select 1'" >/dev/null 2>&1 && break
    sleep 1
  done
  local role
  role=$(id -un)
  sb_as_root su postgres -c "psql -qc \"DO \\\$\\\$ BEGIN CREATE ROLE \\\"$role\\\" SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \\\$\\\$\"" >/dev/null
  sb_as_root su postgres -c "createdb -O '$role' test" 2>/dev/null || true
  local socket_url="postgresql:///test?host=/var/run/postgresql"
  if sb_pg_answers "$tcp_url"; then export SWITCHBOARD_TEST_POSTGRES_URL=$tcp_url
  elif sb_pg_answers "$socket_url"; then export SWITCHBOARD_TEST_POSTGRES_URL=$socket_url
  else sb_say "PostgreSQL does not answer"; return 1; fi
}

sb_pg_answers() {
  "$SB_VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

# The dashboard's browser test drives Debian's headless Chromium through its chromedriver.
# Most runs find both already there, so the package lists are refreshed only when a plain
# install fails (a fresh image whose lists are missing or stale).
sb_ensure_chromium() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  sb_say "installing chromium and chromium-driver from Debian's packages"
  if ! sb_as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; then
    sb_as_root apt-get update -qq
    sb_as_root env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}
