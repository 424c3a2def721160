"""The SQLAlchemy guide of docs/integration.md, run against Causeway with lagging replicas.

Usage: sqlalchemy_guide.py DSN PRIMARY_PORT. Expects table guide_notes (id serial, user_id
int, body text) on every node, and replicas that apply WAL about a second late. SQLAlchemy
2.0 over psycopg2 (the default PostgreSQL dialect). The code between `guide:` markers is shown
in docs/integration.md verbatim (a test compares them). Exits non-zero on failure.
"""
import sys

from sqlalchemy import Integer, String, create_engine, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

DSN = sys.argv[1]
PRIMARY_PORT = int(sys.argv[2])
URL = DSN.replace("postgresql://", "postgresql+psycopg2://", 1)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "guide_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(String)


# guide:begin sqlalchemy-engine
from contextvars import ContextVar

# Set by the web framework for each request (e.g. in a middleware or a Flask before_request).
current_end_user: ContextVar[str | None] = ContextVar("current_end_user", default=None)

# Two engines, not engine.execution_options(isolation_level=...): switching a pooled
# connection's isolation level makes psycopg2 send SET default_transaction_isolation, one
# more round trip to the primary each time (it moves no floor).
writer = create_engine(URL, pool_size=5)  # transactions: BEGIN runs on the primary
reader = create_engine(URL, pool_size=5, isolation_level="AUTOCOMMIT")  # routed reads


def name_causeway_session(dbapi_connection, connection_record, connection_proxy):
    """Name the Causeway session after the request's end user at every pool checkout."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # outside any transaction (see the psycopg2 guide)
    with dbapi_connection.cursor() as cur:
        key = current_end_user.get()
        if key is None:
            cur.execute("RESET causeway.session")
        else:
            cur.execute("SET causeway.session = %s", [key])
    dbapi_connection.autocommit = autocommit


def add_causeway_hint(conn, cursor, statement, parameters, context, executemany):
    """execution_options(causeway="route=primary") becomes a hint comment."""
    options = context.execution_options if context is not None else {}
    hint = options.get("causeway")
    if hint:
        statement = f"/* causeway: {hint} */ {statement}"
    return statement, parameters


for engine in (writer, reader):
    event.listen(engine, "checkout", name_causeway_session)
    event.listen(engine, "before_cursor_execute", add_causeway_hint, retval=True)
# guide:end sqlalchemy-engine


def node(session, options=None):
    port = session.execute(text("SELECT inet_server_port()"), execution_options=options).scalar()
    return "primary" if port == PRIMARY_PORT else "replica"


def notes_of(session, user_id):
    return session.scalars(select(Note.body).where(Note.user_id == user_id)).all()


def checkouts_differ():
    """The pool hands request 2 a different connection than request 1 (both held at once)."""
    with reader.connect() as a, reader.connect() as b:
        return a.connection.dbapi_connection is not b.connection.dbapi_connection


def main():
    # Request 1 (POST) for end user 42, in a transaction on the primary.
    token = current_end_user.set("user-42")
    # guide:begin sqlalchemy-write
    with Session(writer) as session, session.begin():
        session.add(Note(user_id=42, body="hello"))
    # guide:end sqlalchemy-write
    current_end_user.reset(token)
    # Request 2 (GET) for user 42 from a fresh pool (other connections): sees the write.
    fresh = create_engine(URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    event.listen(fresh, "checkout", name_causeway_session)
    token = current_end_user.set("user-42")
    with Session(fresh) as session:
        assert notes_of(session, 42) == ["hello"], "read-your-writes across connections failed"
        print("sqlalchemy: user 42's read after its write ran on the", node(session))
    current_end_user.reset(token)
    # Another end user reads from replicas; a hinted read goes to the primary.
    token = current_end_user.set("user-7")
    with Session(reader) as session:
        nodes = [node(session) for _ in range(5)]
        assert nodes == ["replica"] * 5, (nodes, session.execute(text("SHOW causeway.session_lsn")).scalar(), session.execute(text("SHOW causeway.session")).scalar())
    # guide:begin sqlalchemy-read
    with Session(reader) as session:  # autocommit: each statement is routed on its own
        notes = session.scalars(select(Note).where(Note.user_id == 7)).all()
        balance_check = session.execute(
            text("SELECT inet_server_port()"),
            execution_options={"causeway": "route=primary"},
        ).scalar()
    # guide:end sqlalchemy-read
        assert notes == []
        assert balance_check == PRIMARY_PORT, "the route=primary read went to a replica"
    current_end_user.reset(token)
    # In a transaction everything runs on the primary (BEGIN goes there).
    with Session(writer) as session, session.begin():
        assert node(session) == "primary"
    assert checkouts_differ()
    print("sqlalchemy: user 7 read from replicas; hinted and transactional reads, the primary")
    print("sqlalchemy: all checks passed")


main()
