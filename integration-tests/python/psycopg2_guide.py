"""The psycopg2 guide of docs/integration.md, run against Causeway with lagging replicas.

Usage: psycopg2_guide.py DSN PRIMARY_PORT. Expects table guide_notes (id serial, user_id int,
body text) on every node, and replicas that apply WAL about a second late, so a read that
reaches a replica cannot see a write made just before it. The code between `guide:` markers
is shown in docs/integration.md verbatim (a test compares them). Exits non-zero on failure.
"""
import sys
from contextlib import contextmanager

import psycopg2

DSN = sys.argv[1]
PRIMARY_PORT = int(sys.argv[2])


# guide:begin psycopg2-request
@contextmanager
def request_connection(end_user_id):
    """A connection for one web request, its Causeway session named after the end user."""
    conn = psycopg2.connect(DSN)  # or pool.getconn(): name the session at every checkout
    conn.autocommit = True  # no implicit BEGIN: each read is routed on its own
    try:
        with conn.cursor() as cur:
            if end_user_id is None:
                cur.execute("RESET causeway.session")
            else:
                # psycopg2 inlines the value as a quoted literal: SET causeway.session = '42'
                cur.execute("SET causeway.session = %s", [str(end_user_id)])
        yield conn
    finally:
        conn.close()
# guide:end psycopg2-request


def node(cur):
    cur.execute("SELECT inet_server_port()")
    return "primary" if cur.fetchone()[0] == PRIMARY_PORT else "replica"


def notes_of(cur, user_id):
    cur.execute("SELECT body FROM guide_notes WHERE user_id = %s ORDER BY id", [user_id])
    return [row[0] for row in cur.fetchall()]


def main():
    # Request 1 (POST): user 42 writes on one connection.
    with request_connection(42) as conn, conn.cursor() as cur:
        first_pid = conn.get_backend_pid()
        cur.execute("INSERT INTO guide_notes (user_id, body) VALUES (%s, %s)", [42, "hello"])
    # Request 2 (GET after the redirect): another connection of the same end user sees it.
    with request_connection(42) as conn, conn.cursor() as cur:
        assert conn.get_backend_pid() != first_pid, "request 2 reused request 1's connection"
        assert notes_of(cur, 42) == ["hello"], "read-your-writes across connections failed"
        print("psycopg2: user 42's read after its write ran on the", node(cur))
    # The same GET on an unnamed connection (what an unkeyed app gets): a replica, stale.
    with request_connection(None) as conn, conn.cursor() as cur:
        assert node(cur) == "replica"
        assert notes_of(cur, 42) == [], "expected the lagging replica to miss the write"
        print("psycopg2: an unnamed connection read from a replica and missed the write")
    # Another end user, who wrote nothing, reads from the replicas.
    with request_connection(7) as conn, conn.cursor() as cur:
        ports = [node(cur) for _ in range(5)]
        assert ports == ["replica"] * 5, ports
        # guide:begin psycopg2-hint
        cur.execute("/* causeway: route=primary */ SELECT inet_server_port()")
        # guide:end psycopg2-hint
        assert cur.fetchone()[0] == PRIMARY_PORT, "the route=primary hint read a replica"
        print("psycopg2: user 7 read from replicas; its route=primary read from the primary")
    # Keys with quotes, backslashes and non-ASCII text round-trip as one literal.
    with request_connection("o'brien\\; DROP TABLE guide_notes --ü") as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW causeway.session")
            assert cur.fetchone()[0] == "o'brien\\; DROP TABLE guide_notes --ü"
    # psycopg2's default mode (autocommit off) sends BEGIN before the first statement, so
    # the SET lands inside that transaction; its commit still raises the named session.
    # guide:begin psycopg2-transaction
    conn = psycopg2.connect(DSN)
    with conn, conn.cursor() as cur:  # BEGIN ... COMMIT, on the primary
        cur.execute("SET causeway.session = %s", ["99"])
        cur.execute("INSERT INTO guide_notes (user_id, body) VALUES (%s, %s)", [99, "tx"])
    conn.close()
    # guide:end psycopg2-transaction
    with request_connection(99) as conn, conn.cursor() as cur:
        assert notes_of(cur, 99) == ["tx"], "a transaction's write was not seen by its session"
    # A read-only transaction runs on one replica chosen for the session's floor.
    # guide:begin psycopg2-readonly
    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET causeway.session = %s", ["8"])  # before BEGIN
    conn.autocommit = False
    conn.set_session(readonly=True)  # psycopg2 sends BEGIN READ ONLY
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM guide_notes")
        cur.execute("SELECT inet_server_port()")
    # guide:end psycopg2-readonly
        assert cur.fetchone()[0] != PRIMARY_PORT, "BEGIN READ ONLY did not run on a replica"
    with conn, conn.cursor() as cur:
        try:
            cur.execute("SET causeway.session = %s", ["42"])
            raise AssertionError("SET causeway.session inside a replica transaction succeeded")
        except psycopg2.errors.FeatureNotSupported:
            pass
    conn.close()
    print("psycopg2: all checks passed")


main()
