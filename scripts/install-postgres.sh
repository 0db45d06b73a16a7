#!/usr/bin/env bash
# Installs what the PostgreSQL backend's tests start: PostgreSQL 15 (Debian's packages) and
# pgvector, which Debian 12 does not package: it is built from Debian trixie's source package
# (a deb-src line for trixie, `apt-get source pgvector`), without -march=native so the
# extension runs on every CPU of the machine's kind. Idempotent: does nothing when both are
# there. About a minute on 2 cores.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if ! command -v pg_config >/dev/null || [ ! -x "$(pg_config --bindir)/initdb" ] ||
   [ ! -d "$(pg_config --includedir-server 2>/dev/null)" ]; then
  echo "== installing postgresql-15 (for the PostgreSQL backend's tests)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 \
    postgresql-server-dev-15 >/dev/null
fi

extensions="$(pg_config --sharedir)/extension"
if [ ! -f "$extensions/vector.control" ]; then
  echo "== building pgvector from Debian trixie's source package" >&2
  sources=/etc/apt/sources.list.d/basalt-trixie-src.sources
  if [ ! -f "$sources" ]; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      $sudo tee "$sources" >/dev/null
  fi
  $sudo apt-get update -qq
  command -v dpkg-source >/dev/null ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dpkg-dev >/dev/null
  build="$(mktemp -d)"
  (cd "$build" && apt-get source -qq pgvector >/dev/null 2>&1)
  source_dir="$(find "$build" -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)"
  [ -n "$source_dir" ] || { echo "apt-get source pgvector found nothing" >&2; exit 1; }
  make -s -C "$source_dir" OPTFLAGS="" >/dev/null
  $sudo make -s -C "$source_dir" OPTFLAGS="" install >/dev/null
  rm -rf "$build"
fi
