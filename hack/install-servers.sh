#!/usr/bin/env bash
# Installs the queue servers the tests start (redis-server, rabbitmq-server) from Debian's
# packages when they are missing, and python3-redis, with which pkg/worker's tests run a
# Python rediswq worker beside the Go ones. The tests start and stop their own instances on
# free ports in temporary directories; nothing here starts a service.
set -euo pipefail

have() { command -v redis-server >/dev/null && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null &&
  /usr/bin/python3 -c 'import redis' 2>/dev/null; }
have && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "redis-server, rabbitmq-server or python3-redis is missing: run 'sudo apt-get install redis-server rabbitmq-server python3-redis'" >&2
  exit 1
fi
echo "installing redis-server, rabbitmq-server and python3-redis with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages from starting their system services.
policy=/usr/sbin/policy-rc.d
created=
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
apt-get install -y -qq --no-install-recommends redis-server rabbitmq-server python3-redis >&2 || { [ -n "$created" ] && rm -f "$policy"; exit 1; }
[ -n "$created" ] && rm -f "$policy"
have
