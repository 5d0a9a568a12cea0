#!/usr/bin/env bash
# Checks deploy/nginx.conf in front of `kiln serve --root-path /kiln`, everything on the
# loopback: TLS, the sub-path (pages, links, static files, the login cookie's path), the
# cookie marked Secure, a run's live log (Server-Sent Events) through the proxy; then a proxy on
# another address (127.0.0.2), trusted only once named in FORWARDED_ALLOW_IPS.
#
#   deploy/check-proxy.sh              # KILN=/path/to/kiln to use another kiln than PATH's
#
# Needs nginx (Debian: apt-get install nginx-light), openssl, curl, python3, and kiln with the
# server extra. Not part of `make test`.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kiln=${KILN:-kiln}
for tool in nginx openssl curl python3 "$kiln"; do
  command -v "$tool" >/dev/null || { echo "check-proxy: needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '== %s\n' "$*"; }
die() { printf 'check-proxy: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

kport=$(free_port)
pport=$(free_port)
url=https://127.0.0.1:$pport/kiln
mkdir -p "$work/project"
python3 - "$work/project/hello.ipynb" <<'PY'
import json, sys
cell = lambda src, tags: {"cell_type": "code", "execution_count": None, "id": f"c{len(tags)}",
                          "metadata": {"tags": tags}, "outputs": [], "source": src}
nb = {"cells": [cell("n = 3", ["parameters"]), cell("print('hello', n)", [])], "nbformat": 4,
      "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3",
      "display_name": "Python 3", "language": "python"}}}
open(sys.argv[1], "w").write(json.dumps(nb))
PY
echo "server: {root_path: /kiln}" >"$work/project/kiln.yaml"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 1 -subj /CN=localhost 2>/dev/null

start_kiln() {  # start_kiln [VAR=value...]: kiln serve on $kport; its admin password in $password
  : >"$work/kiln.log"
  (cd "$work/project" && exec env KILN_HOME="$work/home" "$@" "$kiln" serve --port "$kport" \
    --workers 1 >"$work/kiln.log" 2>&1) &
  kiln_pid=$!
  pids+=("$kiln_pid")
  local deadline=$((SECONDS + 60))
  until grep -q 'listening on' "$work/kiln.log"; do
    kill -0 "$kiln_pid" 2>/dev/null || { cat "$work/kiln.log"; die "kiln serve exited"; }
    ((SECONDS < deadline)) || die "kiln serve did not listen in 60 s"
    sleep 0.2
  done
  password=${password:-$(sed -n 's/^admin password: //p' "$work/kiln.log")}
}
stop_kiln() { kill "$kiln_pid"; wait "$kiln_pid" || true; }

start_nginx() {  # start_nginx [DIRECTIVE]: deploy/nginx.conf on $pport, DIRECTIVE in its location
  local extra=${1:-}
  sed -e "s|listen 443 ssl;|listen 127.0.0.1:$pport ssl;|" \
    -e "s|ssl_certificate /.*;|ssl_certificate $work/cert.pem;|" \
    -e "s|ssl_certificate_key /.*;|ssl_certificate_key $work/key.pem;|" \
    -e "s|proxy_pass http://127.0.0.1:8000;|proxy_pass http://127.0.0.1:$kport; $extra|" \
    "$here/deploy/nginx.conf" >"$work/server.conf"
  grep -q "127.0.0.1:$kport" "$work/server.conf" || die "deploy/nginx.conf has no proxy_pass to :8000"
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  include $work/server.conf;
}
EOF
  nginx -c "$work/nginx.conf" -p "$work/nginx" 2>>"$work/nginx-error.log" &
  nginx_pid=$!
  pids+=("$nginx_pid")
  local deadline=$((SECONDS + 30))
  until curl -sk -o /dev/null "$url/health"; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx-error.log"; die "nginx exited"; }
    ((SECONDS < deadline)) || die "no answer through nginx in 30 s"
    sleep 0.2
  done
}
stop_nginx() { kill "$nginx_pid"; wait "$nginx_pid" || true; }

login_cookie() {  # the Set-Cookie header of a login through the proxy
  curl -sk -D - -o /dev/null -c "$work/jar" "$url/api/v1/login" -H 'Content-Type: application/json' \
    -d "{\"username\": \"admin\", \"password\": \"$password\"}" | tr -d '\r' | grep -i '^set-cookie:'
}

start_kiln
start_nginx
curl -sk "$url/health" | grep -q '"status":"ok"' || die "GET /kiln/health"
location=$(curl -sk -o /dev/null -w '%{redirect_url}' "$url/")
[[ $location == "$url/login?next=/" ]] || die "GET /kiln/ redirects to $location"
cookie=$(login_cookie)
[[ $cookie == *"Path=/kiln"* && $cookie == *"; Secure"* ]] || die "login cookie: $cookie"
say "ok: TLS and /kiln through nginx: health, the login redirect, a Secure cookie on /kiln"

links=$(curl -sk -b "$work/jar" "$url/" | grep -oE '(href|src|action)="/[^"]*"' | sort -u)
outside=$(grep -v '="/kiln/' <<<"$links" || true)
[[ -n $links && -z $outside ]] || die "links outside /kiln: $outside"
css=$(grep -oE '/kiln/[^"]*\.css' <<<"$links" | head -1)
[[ $(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$pport$css") == 200 ]] \
  || die "static file $css"
curl -sk -b "$work/jar" "$url/docs" | grep -q "'/kiln/openapi.json'" || die "/kiln/docs"
[[ $(curl -sk -b "$work/jar" -o /dev/null -w '%{http_code}' "$url/openapi.json") == 200 ]] \
  || die "/kiln/openapi.json"
say "ok: the web UI's $(wc -l <<<"$links") links are all under /kiln/, its CSS and the API docs are served"

token=$(curl -sk -b "$work/jar" "$url/api/v1/tokens" -H 'Content-Type: application/json' \
  -d '{"user": "admin"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
run=$(curl -sk -H "Authorization: Bearer $token" "$url/api/v1/runs" \
  -H 'Content-Type: application/json' -d '{"notebook": "hello.ipynb", "parameters": {"n": 5}}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
events=$(curl -sk -N --max-time 90 -H "Authorization: Bearer $token" \
  "$url/api/v1/runs/$run/log?follow=1")
if ! grep -q 'hello 5' <<<"$events" || ! grep -q '"state": "succeeded"' <<<"$events"; then
  die "the live log through the proxy: $events"
fi
say "ok: a run's live log (Server-Sent Events) followed through the proxy to its end"
stop_nginx

# a proxy on another address (as from another container): not trusted until named
start_nginx "proxy_bind 127.0.0.2;"
cookie=$(login_cookie)
[[ $cookie != *"; Secure"* ]] || die "a proxy on 127.0.0.2 was trusted without FORWARDED_ALLOW_IPS"
stop_kiln
start_kiln FORWARDED_ALLOW_IPS=127.0.0.2
cookie=$(login_cookie)
[[ $cookie == *"; Secure"* ]] || die "FORWARDED_ALLOW_IPS=127.0.0.2: cookie $cookie"
say "ok: a proxy on 127.0.0.2 is trusted with FORWARDED_ALLOW_IPS=127.0.0.2 only"
say "all proxy checks passed"
