#!/usr/bin/env bash
# Builds the repository's Dockerfile with podman (no Docker engine needed) and smoke-tests the
# image end to end: the first start's admin password in the log, GET /health, the HEALTHCHECK,
# a run submitted through the API with a token of that admin, a notebook endpoint call, every
# process running as the non-root `kiln` user, and SIGTERM draining to exit code 0.
#
#   deploy/check-image.sh                       # on a stand-in of python:3.11-slim (see below)
#   BASE=python:3.11-slim deploy/check-image.sh # on the official image, where it can be pulled
#
# Needs root and podman, buildah, runc, debootstrap (Debian: apt-get install podman buildah
# runc debootstrap). Where Docker Hub cannot be reached, BASE defaults to a stand-in made from
# Debian's packages: a minimal bookworm (Python 3.11, like python:3.11-slim) made once with
# debootstrap, cached under ~/.cache/kiln and imported as localhost/kiln-base:bookworm.
# The container has no network but its own loopback: the checks run inside it (podman exec).
# Not part of `make test`: it takes a few minutes and wants root.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KILN_CACHE:-$HOME/.cache/kiln}
image=${IMAGE:-localhost/kiln:check}
stand_in=localhost/kiln-base:bookworm
base=${BASE:-$stand_in}

# Podman's defaults that some hosts refuse: crun does not run on hybrid cgroups (runc does), and
# without CAP_SYS_RESOURCE no limit can be raised above the caller's own.
opts=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=8192:8192)
if command -v runc >/dev/null; then opts+=(--runtime runc); fi
# shellcheck disable=SC2206  # KILN_PODMAN_OPTS is a list of words on purpose
opts+=(${KILN_PODMAN_OPTS:-})

say() { printf '== %s\n' "$*"; }
die() { printf 'check-image: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
# podman without systemd complains about its healthcheck timers (checks run by hand here)
quiet() { grep -v 'systemd connection' >&2 || true; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

for tool in podman bc python3; do
  command -v "$tool" >/dev/null || die "needs $tool (apt-get install podman buildah runc bc)"
done

# -- the stand-in base --------------------------------------------------------------------------
if [[ $base == "$stand_in" ]] && ! podman image exists "$stand_in"; then
  root=$cache/bookworm-root
  if [[ ! -x $root/usr/bin/python3 ]]; then
    command -v debootstrap >/dev/null || die "needs debootstrap to make the stand-in base"
    say "debootstrap a minimal bookworm with Python 3.11 into $root"
    rm -rf "$root.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3 \
      bookworm "$root.tmp" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
      || die "debootstrap failed: see $cache/debootstrap.log"
    # what python:3.11-slim does not carry either: package caches and lists, docs, locales
    rm -rf "$root.tmp"/var/cache/apt/archives/*.deb "$root.tmp"/var/lib/apt/lists/* \
      "$root.tmp"/usr/share/{doc,man,info,locale}
    mv "$root.tmp" "$root"
  fi
  say "import $root as $stand_in"
  tar -C "$root" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    - "$stand_in" >/dev/null 2>"$cache/import.log" || die "the import failed: see $cache/import.log"
fi

# -- the image ----------------------------------------------------------------------------------
say "build $image from the Dockerfile on $base"
started=$(now)
# --format docker keeps HEALTHCHECK (the OCI format has none). The host's CA certificates are
# lent to the build (not stored in the image) for a host whose egress re-signs TLS.
podman build --format docker --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg "BASE=$base" "${opts[@]}" -t "$image" "$here" >"$cache/check-image-build.log" 2>&1 \
  || { tail -30 "$cache/check-image-build.log"; die "the build failed"; }
size=$(podman image inspect --format '{{.Size}}' "$image")
base_size=$(podman image inspect --format '{{.Size}}' "$base")
say "built in $(since "$started") s: $((size / 1000000)) MB ($((base_size / 1000000)) MB of it the base)"

# -- a project to serve -------------------------------------------------------------------------
work=$(mktemp -d)
volume=kiln-check-$$
cid=
cleanup() {
  if [[ -n $cid ]]; then podman rm -f -t 0 "$cid" >/dev/null 2>&1 || true; fi
  podman volume rm -f "$volume" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

notebook() {  # notebook FILE PARAMETERS-SOURCE BODY-SOURCE
  python3 - "$@" <<'PY'
import json, sys
path, params, body = sys.argv[1:]
cell = lambda src, tags: {"cell_type": "code", "execution_count": None, "id": f"c{len(tags)}",
                          "metadata": {"tags": tags}, "outputs": [], "source": src}
nb = {"cells": [cell(params, ["parameters"]), cell(body, [])], "nbformat": 4,
      "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
      "display_name": "Python 3", "language": "python"}}}
open(path, "w").write(json.dumps(nb, indent=1))
PY
}
mkdir -p "$work/project/api"
notebook "$work/project/hello.ipynb" "n = 3"$'\n'"pause = 0.0" \
  "import kiln, os, time"$'\n'"print('hello', n)"$'\n'"time.sleep(pause)"$'\n'"kiln.record('square', n * n)"$'\n'"kiln.record('uid', os.getuid())"
notebook "$work/project/api/double.ipynb" "x = 1" "import kiln"$'\n'"kiln.record('y', 2 * x)"
printf 'endpoints:\n  double: {notebook: api/double.ipynb, timeout: 30s, concurrency: 2}\n' \
  >"$work/project/kiln.yaml"
chmod -R a+rX "$work"

# -- run it -------------------------------------------------------------------------------------
podman volume create "$volume" >/dev/null
started=$(now)
# the project read-only: serving it must not write into it
cid=$(podman run -d --network none --health-interval disable "${opts[@]}" \
  -v "$work/project:/project:ro" -v "$volume:/data" "$image" 2>"$work/run.err") || { cat "$work/run.err"; die "podman run failed"; }
password=
deadline=$((SECONDS + 60))
while [[ -z $password ]]; do
  password=$(podman logs "$cid" 2>&1 | sed -n 's/^admin password: //p' | head -1)
  if [[ -z $password ]]; then
    [[ $(podman inspect --format '{{.State.Running}}' "$cid") == true ]] \
      || { podman logs "$cid"; die "the container stopped before printing the admin password"; }
    ((SECONDS < deadline)) || { podman logs "$cid"; die "no 'admin password:' line in 60 s"; }
    sleep 0.2
  fi
done
say "ok: the log has 'admin password: ...' ($(since "$started") s after start)"

# the HTTP checks run in the container, against its own loopback
podman exec -i -e "KILN_PASSWORD=$password" "$cid" python - <<'PY' | tee "$work/client.out" || { podman logs "$cid" | tail -40; die "a smoke check failed"; }
import http.cookiejar, json, os, time, urllib.error, urllib.request

BASE = "http://127.0.0.1:8000"
jar = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
opener = urllib.request.build_opener(jar)


def call(method, path, body=None, token=None, expect=200):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(req, timeout=60) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    assert status == expect, f"{method} {path}: {status} (wanted {expect}): {text}"
    return json.loads(text) if text.startswith(("{", "[")) else text


def until(what, check, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, AssertionError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


t0 = time.monotonic()
health = until("GET /health with every worker alive", lambda: (h := call("GET", "/health"))
               and h["workers"]["alive"] == h["workers"]["wanted"] and h)
print(f"== ok: GET /health: {json.dumps(health)} ({time.monotonic() - t0:.1f} s)")
call("POST", "/api/v1/login", {"username": "admin", "password": os.environ["KILN_PASSWORD"]})
token = call("POST", "/api/v1/tokens", {"user": "admin"}, expect=201)["token"]
call("GET", "/api/v1/me", token="wrong", expect=401)
print("== ok: logged in as admin and made a token")
t0 = time.monotonic()
run = call("POST", "/api/v1/runs", {"notebook": "hello.ipynb", "parameters": {"n": 7}},
           token=token, expect=202)
done = until("the run to end", lambda: (r := call("GET", f"/api/v1/runs/{run['id']}",
              token=token))["state"] not in ("queued", "running") and r)
assert done["state"] == "succeeded", done
assert done["records"] == {"square": 49, "uid": 10001}, done["records"]
log = call("GET", f"/api/v1/runs/{run['id']}/log", token=token)
assert "hello 7" in log, log
html = call("GET", f"/api/v1/runs/{run['id']}/html", token=token)
assert "hello 7" in html
print(f"== ok: a run through the API succeeded in {time.monotonic() - t0:.1f} s "
      f"(records {done['records']}, its log and HTML page served)")
t0 = time.monotonic()
run = call("POST", "/api/v1/runs", {"notebook": "hello.ipynb", "parameters": {"n": 2},
           "engine": "kernel"}, token=token, expect=202)
done = until("the kernel run to end", lambda: (r := call("GET", f"/api/v1/runs/{run['id']}",
              token=token))["state"] not in ("queued", "running") and r)
assert done["state"] == "succeeded", done
assert done["records"] == {"square": 4, "uid": 10001}, done["records"]
print(f"== ok: a run on a Jupyter kernel (the registered kernelspec) succeeded in "
      f"{time.monotonic() - t0:.1f} s")
t0 = time.monotonic()
answer = call("POST", "/api/v1/endpoints/double", {"x": 21}, token=token)
first = time.monotonic() - t0
t0 = time.monotonic()
again = call("POST", "/api/v1/endpoints/double", {"x": 4}, token=token)
assert answer["records"] == {"y": 42} and again["records"] == {"y": 8}, (answer, again)
print(f"== ok: endpoint double answered {answer['records']} ({first * 1000:.0f} ms; "
      f"the next call {(time.monotonic() - t0) * 1000:.0f} ms)")
# a run still going when SIGTERM comes: the drain lets it finish (the grace is 30 s)
slow = call("POST", "/api/v1/runs", {"notebook": "hello.ipynb", "parameters": {"pause": 3}},
            token=token, expect=202)
until("the slow run to start", lambda: call("GET", f"/api/v1/runs/{slow['id']}",
      token=token)["state"] == "running")
print(f"== left running at SIGTERM: {slow['id']}")
PY
slow=$(sed -n 's/^== left running at SIGTERM: //p' "$work/client.out")

# every process of the container, the workers' and the kernels' included, runs as kiln
podman exec -i "$cid" python - <<'PY' || die "a process runs as another user"
import os
users = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status)
    except OSError:
        continue
    users[pid] = (fields["Uid"].split()[0], fields["Name"].strip(), fields["State"].split()[0])
wrong = {pid: u for pid, u in users.items() if u[0] != "10001"}
zombies = {pid: u for pid, u in users.items() if u[2] == "Z"}
assert not wrong, wrong
print(f"== ok: all {len(users)} processes run as uid 10001 (kiln); zombies: {len(zombies)}")
PY
[[ $(podman inspect --format '{{.Config.User}}' "$image") == kiln ]] || die "USER is not kiln"
podman healthcheck run "$cid" >/dev/null 2>&1 || die "the HEALTHCHECK failed"
say "ok: the image's HEALTHCHECK passes"

# SIGTERM (docker stop) drains, letting the running run finish, and exits 0; podman would
# SIGKILL after 90 s
started=$(now)
podman stop -t 90 "$cid" >/dev/null 2> >(quiet)
code=$(podman inspect --format '{{.State.ExitCode}}' "$cid")
[[ $code == 0 ]] || { podman logs "$cid" | tail -20; die "exit code $code after SIGTERM"; }
say "ok: SIGTERM drained (a run of 3 s was going on) and exited 0 in $(since "$started") s"

# the history is kept in the volume, with the run the drain let finish
podman rm "$cid" >/dev/null 2> >(quiet)
cid=$(podman run -d --network none "${opts[@]}" -v "$work/project:/project:ro" \
  -v "$volume:/data" --health-interval disable "$image" kiln runs show "$slow" --json 2> >(quiet))
podman wait "$cid" >/dev/null
state=$(podman logs "$cid" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])')
[[ $state == succeeded ]] || { podman logs "$cid"; die "the run going on at SIGTERM is $state"; }
say "ok: the /data volume keeps the history; the run going on at SIGTERM succeeded"
say "all checks passed ($image: $((size / 1000000)) MB)"
