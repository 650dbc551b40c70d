# Sourced by build-clients.sh and build-peers.sh: the cache of Go-built binaries both keep.
# The caller sets label (for messages), out (the cache directory), binaries (an array of
# names in it) and stamp (the hash that makes the cache current), then calls
# cache_or_lock "$@" before building and cache_store after.

cache_current() {
  [ "${force:-}" != 1 ] || return 1
  [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ] || return 1
  local b
  for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done
}

cache_report() {
  echo "$label in $out:"
  local b
  for b in "${binaries[@]}"; do echo "  $out/$b"; done
}

# Print the cached binaries and exit when they are current (unless --force); otherwise
# take the cache's lock (one build at a time: a second caller waits, then finds the
# cache current) and return, for the caller to build.
cache_or_lock() {
  force=""
  [ "${1:-}" = --force ] && force=1
  if cache_current; then
    cache_report
    exit 0
  fi
  mkdir -p "$out"
  exec 9>"$out/.lock"
  flock 9
  if cache_current; then
    cache_report
    exit 0
  fi
}

# Mark the binaries just built as current and print them.
cache_store() {
  echo "$stamp" > "$out/stamp"
  cache_report
}
