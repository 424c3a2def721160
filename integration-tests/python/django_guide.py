"""The Django guide of docs/integration.md, run against Causeway with lagging replicas.

Usage: django_guide.py DSN PRIMARY_PORT [psycopg|psycopg2]. Expects table guide_orders (id
serial, user_id int, item text) on every node, and replicas that apply WAL about a second
late, so a read that reaches a replica cannot see a write made just before it. Django runs
with a minimal settings module configured here: CONN_MAX_AGE=0 (a connection per request),
requests go through Django's WSGI handler (so the connection closes after each one, as in
production). The code between `guide:` markers is shown in docs/integration.md verbatim (a
test compares them). Exits non-zero on failure.
"""
import io
import json
import re
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit
from wsgiref.util import setup_testing_defaults

DSN = sys.argv[1]
PRIMARY_PORT = int(sys.argv[2])
DRIVER = sys.argv[3] if len(sys.argv) > 3 else "psycopg"
if DRIVER == "psycopg2":
    sys.modules["psycopg"] = None  # Django prefers psycopg 3 when it can import it

import django
from django.conf import settings

url = urlsplit(DSN)
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[
        f"{__name__}.StandInAuthenticationMiddleware",
        f"{__name__}.CausewaySessionMiddleware",
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": url.hostname,
            "PORT": url.port,
            "NAME": url.path.lstrip("/"),
            "USER": url.username,
            "PASSWORD": url.password,
            "CONN_MAX_AGE": 0,  # Django's default: one connection per request
            # guide:begin django-timezone
            # The server's TimeZone as Django's, at connect time: otherwise Django changes
            # it (set_config on psycopg 3, SET TIME ZONE on psycopg2), one more round trip
            # to the primary on every new connection.
            "OPTIONS": {"options": "-c TimeZone=UTC"},
            # guide:end django-timezone
        }
    },
    USE_TZ=True,
)
django.setup()

from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, models, transaction
from django.http import JsonResponse
from django.urls import path


class Order(models.Model):
    user_id = models.IntegerField()
    item = models.TextField()

    class Meta:
        app_label = "guide"
        db_table = "guide_orders"


class StandInUser:
    """What django.contrib.auth's middleware puts on request.user (no auth tables here)."""

    def __init__(self, pk):
        self.pk = pk
        self.is_authenticated = pk is not None


class StandInAuthenticationMiddleware:
    """Stands in for AuthenticationMiddleware: the user id comes from a test header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        uid = request.META.get("HTTP_X_TEST_USER")
        request.user = StandInUser(int(uid) if uid else None)
        return self.get_response(request)


# guide:begin django-middleware
class CausewaySessionMiddleware:
    """Names the Causeway session after the signed-in user for the request's queries.

    List it after AuthenticationMiddleware. With CONN_MAX_AGE=0 each request has its own
    connection; with persistent connections the RESET keeps one user's key from the next.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        with connection.cursor() as cursor:
            if user is not None and user.is_authenticated:
                # The driver sends the id as a quoted literal: SET causeway.session = 'user-42'
                cursor.execute("SET causeway.session = %s", [f"user-{user.pk}"])
            else:
                cursor.execute("RESET causeway.session")
        return self.get_response(request)
# guide:end django-middleware


# guide:begin django-hints
HINT_VALUE = re.compile(r"[A-Za-z0-9_./-]+")


@contextmanager
def causeway_hint(**items):
    """Prefixes every query in the block with /* causeway: key=value, ... */."""
    for value in items.values():
        if not HINT_VALUE.fullmatch(str(value)):
            raise ValueError(f"not a hint value: {value!r}")  # never end the comment early
    comment = "/* causeway: %s */ " % ", ".join(f"{k}={v}" for k, v in items.items())

    def add_hint(execute, sql, params, many, context):
        return execute(comment + sql, params, many, context)

    with connection.execute_wrapper(add_hint):
        yield
# guide:end django-hints


def server_node():
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_port()")
        return "primary" if cursor.fetchone()[0] == PRIMARY_PORT else "replica"


def client_pid():
    """The backend pid of Django's connection: Causeway's own key per client connection."""
    raw = connection.connection
    return raw.info.backend_pid if hasattr(raw, "info") else raw.get_backend_pid()


TASKS = []  # what a view enqueued (stands in for Celery's broker)


# guide:begin django-task
def causal_token():
    """The session's position after its writes: hand it to work done elsewhere."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW causeway.session_lsn")
        return cursor.fetchone()[0]


def place_order(request):
    order = Order.objects.create(user_id=request.user.pk, item=request.POST["item"])
    send_receipt_delay(order.pk, causal_token())  # send_receipt.delay(...) with Celery
    return JsonResponse({"order": order.pk, "pid": client_pid()}, status=201)


# @shared_task  (a Celery task; the worker's connection is not the request's)
def send_receipt(order_id, token):
    with causeway_hint(after_lsn=token):  # reads see at least the request's writes
        order = Order.objects.get(pk=order_id)
    return f"receipt for {order.item}"
# guide:end django-task


def send_receipt_delay(order_id, token):
    TASKS.append((order_id, token))


def my_orders(request):
    items = list(Order.objects.filter(user_id=request.user.pk).values_list("item", flat=True))
    return JsonResponse({"items": items, "node": server_node(), "pid": client_pid()})


def where_do_reads_go(request):
    plain = [server_node() for _ in range(5)]
    with causeway_hint(route="primary"):
        hinted = server_node()
    with transaction.atomic():  # what ATOMIC_REQUESTS does to every view
        atomic = server_node()
    return JsonResponse({"plain": plain, "hinted": hinted, "atomic": atomic})


urlpatterns = [
    path("orders", place_order),
    path("orders/mine", my_orders),
    path("where", where_do_reads_go),
]

application = WSGIHandler()


def request(method, url, user=None, form=None):
    """One request through Django's WSGI handler; the connection closes at its end."""
    body = "&".join(f"{k}={v}" for k, v in (form or {}).items()).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": url,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
    }
    if user is not None:
        environ["HTTP_X_TEST_USER"] = str(user)
    setup_testing_defaults(environ)
    status = []
    response = application(environ, lambda s, headers, exc_info=None: status.append(s))
    content = b"".join(response)
    response.close()  # request_finished: Django closes the connection (CONN_MAX_AGE=0)
    assert status[0].startswith(("200", "201")), (status, content[:2000])
    assert connection.connection is None, "the request's connection stayed open"
    return json.loads(content)


def main():
    print(f"django {django.get_version()} on {connection.Database.__name__}")
    # POST, then the redirect's GET: two requests, two connections, one end user.
    posted = request("POST", "/orders", user=42, form={"item": "book"})
    mine = request("GET", "/orders/mine", user=42)
    assert mine["pid"] != posted["pid"], "both requests used one connection"
    assert mine["items"] == ["book"], f"user 42 did not see the order it placed: {mine}"
    print(f"django: user 42's GET after its POST saw the order (read on the {mine['node']})")
    # The same GET without a session name: a replica, which has not replayed the POST yet.
    anonymous = request("GET", "/orders/mine", user=None)
    assert anonymous["node"] == "replica", anonymous
    print("django: an unnamed request read from a replica")
    # A user who wrote nothing reads from replicas; a hint and a transaction read the primary.
    where = request("GET", "/where", user=7)
    assert where == {"plain": ["replica"] * 5, "hinted": "primary", "atomic": "primary"}, where
    print(f"django: user 7's reads {where}")
    # The task runs on its own connection (a worker's), with the token: it sees the order.
    (order_id, token), = TASKS
    assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", token), token
    assert send_receipt(order_id, token) == "receipt for book"
    connection.close()
    # Without the token the worker's read goes to a replica that misses the order.
    try:
        Order.objects.get(pk=order_id)
        raise AssertionError("expected the lagging replica to miss the order")
    except Order.DoesNotExist:
        pass
    connection.close()
    print(f"django: the task with token {token} saw the order; without it, a replica missed it")
    print("django: all checks passed")


main()
