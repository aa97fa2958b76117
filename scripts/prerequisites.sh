#!/usr/bin/env bash
# The system packages tokensync needs, checked (and installed with apt as root) in one place:
# `make demo`, `make test` and .ci/run all call this script.
#
#   scripts/prerequisites.sh demo   # the local stack: a JDK 17+, Maven, redis-server, Python venv
#   scripts/prerequisites.sh test   # + PostgreSQL and MariaDB server binaries, nginx, Chromium
#
# Everything present: silent, exit 0. Something missing: as root on Debian/Ubuntu it says
# what it installs and runs apt-get; otherwise it prints the one command to run and exits 1.
# For its own tests it honours TOKENSYNC_PREREQ_EUID (the user id to act as),
# TOKENSYNC_PREREQ_OS (debian|ubuntu|macos|other) and TOKENSYNC_PREREQ_DIRS (the system folders
# searched besides PATH, default "/usr/sbin /usr/local/sbin /usr/lib/postgresql/*/bin").
set -euo pipefail

profile=${1:-test}
case "$profile" in
  demo | test) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

euid=${TOKENSYNC_PREREQ_EUID:-$(id -u)}
dirs=${TOKENSYNC_PREREQ_DIRS-/usr/sbin /usr/local/sbin /usr/lib/postgresql/*/bin}
os=${TOKENSYNC_PREREQ_OS:-}
if [ -z "$os" ]; then
  if [ "$(uname -s)" = Darwin ]; then os=macos
  elif command -v apt-get >/dev/null 2>&1; then
    os=$( (. /etc/os-release 2>/dev/null && echo "${ID:-}") || true)
    [ "$os" = ubuntu ] || os=debian
  else os=other
  fi
fi
python=${PYTHON:-python3}

# has PROGRAM: on PATH or in one of the system folders (daemons live in sbin)
has() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local dir
  # shellcheck disable=SC2086 # the folders are globs
  for dir in $dirs; do
    [ -x "$dir/$1" ] && return 0
  done
  return 1
}

missing=()   # what is missing, for the message
apt=()       # Debian/Ubuntu packages
brew=()      # Homebrew formulae (casks marked --cask)
need() {     # need WHAT APT BREW
  missing+=("$1")
  apt+=("$2")
  [ -n "$3" ] && brew+=("$3")
  return 0
}

# java_major: the major version `java -version` reports (1.8 -> 8), empty when it says none
java_major() {
  local said
  said=$(java -version 2>&1 || true)
  [[ $said =~ version\ \"([0-9]+)(\.([0-9]+))? ]] || return 0
  if [ "${BASH_REMATCH[1]}" = 1 ]; then echo "${BASH_REMATCH[3]}"; else echo "${BASH_REMATCH[1]}"; fi
}

if ! has java; then
  need "a JDK 17+" openjdk-17-jdk-headless openjdk
elif command -v java >/dev/null 2>&1; then
  # Kafka 4 brokers need Java 17: an older one on PATH is not enough
  major=$(java_major)
  if [ -n "$major" ] && [ "$major" -lt 17 ]; then
    need "a JDK 17+ (found Java $major)" openjdk-17-jdk-headless openjdk
  fi
fi
has mvn || need Maven maven maven
has redis-server || need redis-server redis-server redis
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need "Python's venv" python3-venv ""
if [ "$profile" = test ]; then
  has make || need make make ""
  has initdb || need "PostgreSQL" postgresql postgresql
  { has mariadbd || has mysqld; } && has mariadb-install-db || need MariaDB mariadb-server mariadb
  has nginx || need nginx nginx nginx
  # Ubuntu ships Chromium as chromium-browser (a snap behind an apt package)
  chromium=chromium
  [ "$os" != ubuntu ] || chromium=chromium-browser
  { has chromium || has chromium-browser || has google-chrome; } || need Chromium "$chromium" chromium
  [ "$os" = macos ] || has runuser || need runuser util-linux ""
fi

[ "${#missing[@]}" -eq 0 ] && exit 0

list=$(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')
if { [ "$os" = debian ] || [ "$os" = ubuntu ]; } && [ "$euid" = 0 ]; then
  echo "tokensync ($profile) installs with apt-get: ${apt[*]} (missing: $list)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt[@]}" >/dev/null
  exit 0
fi
case "$os" in
  debian | ubuntu)
    echo "tokensync ($profile) needs $list; run: sudo apt-get install -y ${apt[*]}" >&2
    ;;
  macos)
    if [ "${#brew[@]}" -gt 0 ]; then
      echo "tokensync ($profile) needs $list; run: brew install ${brew[*]}" >&2
    else
      echo "tokensync ($profile) needs $list; install them, then run this again" >&2
    fi
    ;;
  *) echo "tokensync ($profile) needs $list; install them with your package manager" >&2 ;;
esac
exit 1
