#!/usr/bin/env python3
"""A worker of our own that speaks the rediswq protocol of the Kubernetes docs with
Debian's python3-redis, for the interoperability tests of pkg/worker (it is not the
docs' rediswq.py; it does what that file's lease() and complete() do, from the protocol):

  lease:    RPOPLPUSH <key> -> <key>:processing, then SETEX
            <key>:leased_by_session:<sha224 hex of the item> <seconds> <session>
  complete: LREM <key>:processing 0 <item>, then DEL of the lease key

usage: rediswq_worker.py HOST:PORT KEY NAME MODE [LEASE_SECONDS]
  work        take items until nothing is ready and nothing is in flight; record each as
              "NAME ITEM" at the tail of KEY:done, then complete it; items ending in
              "slow" take 1.5 s
  hold        lease one item, print "leased ITEM", and sleep until killed
  holder ITEM print the session holding ITEM's lease, or "none"
"""
import hashlib
import sys
import time
import uuid

import redis

# Items ending in SLOW take SLOW_SECONDS to work on.
SLOW = b"slow"
SLOW_SECONDS = 1.5


def lease_key(key, item):
    return key + ":leased_by_session:" + hashlib.sha224(item).hexdigest()


def lease(db, key, session, seconds):
    item = db.rpoplpush(key, key + ":processing")
    if item is not None:
        db.setex(lease_key(key, item), seconds, session)
    return item


def complete(db, key, item):
    db.lrem(key + ":processing", 0, item)
    db.delete(lease_key(key, item))


def main():
    addr, key, name, mode = sys.argv[1:5]
    host, port = addr.rsplit(":", 1)
    db = redis.Redis(host=host, port=int(port))
    session = name + "-" + str(uuid.uuid4())
    if mode == "holder":
        holder = db.get(lease_key(key, sys.argv[5].encode()))
        print(holder.decode() if holder else "none", flush=True)
        return
    seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 30
    if mode == "hold":
        while True:
            item = lease(db, key, session, seconds)
            if item is not None:
                print("leased", item.decode(), flush=True)
                time.sleep(3600)
            time.sleep(0.05)
    while True:
        item = lease(db, key, session, seconds)
        if item is None:
            if db.llen(key) == 0 and db.llen(key + ":processing") == 0:
                return
            time.sleep(0.05)
            continue
        # The work: slow items (see SLOW) take longer than the reaper's grace in the tests.
        time.sleep(SLOW_SECONDS if item.endswith(SLOW) else 0.001)
        db.rpush(key + ":done", name + " " + item.decode())
        complete(db, key, item)


if __name__ == "__main__":
    main()
