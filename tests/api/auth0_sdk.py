"""A backend's use of Switchyard's Management API through Auth0's own
Python SDK (auth0-python 6.8.0), with nothing written over HTTP by hand:
the token from `auth0.authentication.GetToken` (the client credentials
grant with `audience=https://{domain}/api/v2/`), every call through the
SDK's generated `auth0.management.Auth0` client.

Run by tests/api/mgmt_sdk.rs; by hand:

    python3 tests/api/auth0_sdk.py --domain 127.0.0.1:3000 \
        --client-id ID --client-secret SECRET --expected-users 120

Each option also comes from the environment (MGMT_DOMAIN,
MGMT_CLIENT_ID, MGMT_CLIENT_SECRET, MGMT_CONNECTION, MGMT_EMAIL_PREFIX,
MGMT_EXPECTED_USERS, MGMT_UPDATED_EMAIL). One line is printed per step;
the exit status is 1, with the reason, at the first mismatch.
"""

import argparse
import datetime
import os
import sys
from urllib.parse import urlparse

from auth0.authentication import GetToken
from auth0.authentication.exceptions import Auth0Error
from auth0.management import Auth0
from auth0.management.core.api_error import ApiError
from auth0.management.errors import BadRequestError, NotFoundError

# Auth0's default database connection, which Switchyard answers to when it
# has no upstream ("Connections", Auth0 docs).
DEFAULT_CONNECTION = "Username-Password-Authentication"
# A page of the pager, small enough that the seeded users span several.
PER_PAGE = 50


class Mismatch(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Mismatch(what)


def step(name, detail=""):
    print(f"ok   {name}{': ' + detail if detail else ''}", flush=True)


def options():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", default=env("MGMT_DOMAIN"), help="host:port of the issuer")
    p.add_argument("--client-id", default=env("MGMT_CLIENT_ID"))
    p.add_argument("--client-secret", default=env("MGMT_CLIENT_SECRET"))
    p.add_argument("--connection", default=env("MGMT_CONNECTION", DEFAULT_CONNECTION))
    p.add_argument("--email-prefix", default=env("MGMT_EMAIL_PREFIX", "sdk-"))
    p.add_argument(
        "--expected-users",
        type=int,
        default=int(env("MGMT_EXPECTED_USERS", "-1")),
        help="users in the store before this script runs (-1: not checked)",
    )
    p.add_argument(
        "--updated-email",
        default=env("MGMT_UPDATED_EMAIL"),
        help="an existing user this script updates and leaves in place",
    )
    args = p.parse_args()
    for name in ("domain", "client_id", "client_secret"):
        if not getattr(args, name):
            p.error(f"--{name.replace('_', '-')} (or its MGMT_ variable) is required")
    return args


def auth0_error_body(error, status):
    """Auth0's error shape (Management API v2, "Errors"):
    {"statusCode", "error", "message", "errorCode"}."""
    body = error.body
    check(isinstance(body, dict), f"the {status} body is not a JSON object: {body!r}")
    check(body.get("statusCode") == status, f"statusCode is not {status}: {body}")
    check(isinstance(body.get("error"), str) and body["error"], f"no error: {body}")
    check(isinstance(body.get("message"), str) and body["message"], f"no message: {body}")
    check("errorCode" in body, f"no errorCode: {body}")
    return body


def run(args):
    domain = args.domain
    audience = f"https://{domain}/api/v2/"

    # Auth0 Authentication API, "Client Credentials Flow".
    grant = GetToken(domain, args.client_id, args.client_secret, protocol="http").client_credentials(
        audience=audience
    )
    check(grant.get("token_type") == "Bearer", f"token_type: {grant}")
    check(isinstance(grant.get("expires_in"), int) and grant["expires_in"] > 0, f"expires_in: {grant}")
    token = grant["access_token"]
    step("token", f"scope {grant.get('scope')!r}, expires in {grant['expires_in']} s")

    # The SDK's ManagementClient only builds https URLs; Auth0 is the same
    # generated client with the base URL given.
    mgmt = Auth0(base_url=f"http://{domain}/api/v2", token=token)

    # Create (Management API v2, "Create a User").
    email = f"{args.email_prefix}created@example.com"
    created = mgmt.users.create(
        connection=args.connection,
        email=email,
        password="a long enough passphrase 4 the SDK",
        name="Sdk Created",
        user_metadata={"plan": "gold", "visits": 1},
    )
    user_id = created.user_id
    check(isinstance(user_id, str) and user_id, f"no user_id: {created}")
    check(created.email == email, f"email: {created.email!r}")
    check(created.name == "Sdk Created", f"name: {created.name!r}")
    check(created.user_metadata == {"plan": "gold", "visits": 1}, f"user_metadata: {created.user_metadata!r}")
    check(created.blocked in (None, False), f"blocked: {created.blocked!r}")
    check(isinstance(created.created_at, datetime.datetime), f"created_at: {created.created_at!r}")
    identities = created.identities or []
    check(len(identities) == 1, f"identities: {identities!r}")
    check(identities[0].connection == args.connection, f"identity connection: {identities[0]!r}")
    step("users.create", user_id)

    # Get a User.
    got = mgmt.users.get(user_id)
    check(got.user_id == user_id, f"get user_id: {got.user_id!r}")
    check(got.email == email, f"get email: {got.email!r}")
    check(got.user_metadata == {"plan": "gold", "visits": 1}, f"get user_metadata: {got.user_metadata!r}")
    step("users.get", got.email)

    # List or Search Users, by exact email: one match, and the pager ends
    # at the first empty page.
    found = list(mgmt.users.list(page=0, per_page=10, q=f'email:"{email}"'))
    check([u.user_id for u in found] == [user_id], f"q=email: {[u.user_id for u in found]}")
    step("users.list q=email", f"{len(found)} user")

    # Every user through the SDK's pager, several pages of PER_PAGE.
    pager = mgmt.users.list(page=0, per_page=PER_PAGE, sort="created_at:1", include_totals=True)
    ids, created_ats, pages, totals = [], [], 0, set()
    for page in pager.iter_pages():
        pages += 1
        check(len(page.items) <= PER_PAGE, f"page {pages} has {len(page.items)} users")
        totals.add(page.response.total)
        for u in page.items:
            ids.append(u.user_id)
            created_ats.append(u.created_at)
    check(len(totals) == 1, f"the total changed between pages: {totals}")
    total = int(totals.pop())
    check(len(ids) == total, f"{len(ids)} users paged, total says {total}")
    check(len(set(ids)) == len(ids), "a user appeared on two pages")
    check(user_id in ids, "the created user is not listed")
    check(created_ats == sorted(created_ats), "not sorted by created_at ascending")
    if args.expected_users >= 0:
        check(total == args.expected_users + 1, f"total {total}, expected {args.expected_users + 1}")
    expected_pages = -(-total // PER_PAGE)
    check(pages == expected_pages, f"{pages} pages for {total} users at {PER_PAGE} a page")
    check(pages > 1, f"only {pages} page: seed more users")
    step("users.list pager", f"{total} users over {pages} pages")

    # Search Users by Email.
    by_email = mgmt.users.list_users_by_email(email=email)
    check([u.user_id for u in by_email] == [user_id], f"users-by-email: {by_email!r}")
    check(mgmt.users.list_users_by_email(email=f"{args.email_prefix}nobody@example.com") == [], "nobody found")
    step("users.list_users_by_email", email)

    # Update a User: metadata merges at the first level, the rest replaces.
    updated = mgmt.users.update(
        user_id,
        name="Sdk Renamed",
        user_metadata={"theme": "dark"},
        app_metadata={"tier": "pro"},
        blocked=True,
    )
    check(updated.user_id == user_id, f"update user_id: {updated.user_id!r}")
    check(updated.name == "Sdk Renamed", f"update name: {updated.name!r}")
    check(
        updated.user_metadata == {"plan": "gold", "visits": 1, "theme": "dark"},
        f"update user_metadata (a first-level merge): {updated.user_metadata!r}",
    )
    check(updated.app_metadata == {"tier": "pro"}, f"update app_metadata: {updated.app_metadata!r}")
    check(updated.blocked is True, f"update blocked: {updated.blocked!r}")
    again = mgmt.users.get(user_id)
    check(again.name == "Sdk Renamed" and again.blocked is True, f"the update did not stick: {again!r}")
    step("users.update", "name, user_metadata (merged), app_metadata, blocked")

    # An existing user the caller checks afterwards in Switchyard's store.
    if args.updated_email:
        matches = mgmt.users.list_users_by_email(email=args.updated_email)
        check(len(matches) == 1, f"users-by-email {args.updated_email}: {matches!r}")
        kept = matches[0]
        mgmt.users.update(kept.user_id, user_metadata={"theme": "dark"})
        kept = mgmt.users.update(kept.user_id, user_metadata={"locale": "fr"}, app_metadata={"plan": "pro"})
        check(kept.user_metadata == {"theme": "dark", "locale": "fr"}, f"kept user_metadata: {kept.user_metadata!r}")
        check(kept.app_metadata == {"plan": "pro"}, f"kept app_metadata: {kept.app_metadata!r}")
        step("users.update (kept)", args.updated_email)

    # Create a password change ticket: a link on Switchyard itself.
    ticket = mgmt.tickets.change_password(user_id=user_id).ticket
    parsed = urlparse(ticket)
    check(parsed.scheme in ("http", "https") and parsed.netloc == domain, f"ticket: {ticket!r}")
    step("tickets.change_password", f"{parsed.scheme}://{parsed.netloc}{parsed.path}…")

    # A password the connection's policy refuses: 400 with Auth0's body,
    # and no user.
    weak = f"{args.email_prefix}weak@example.com"
    try:
        mgmt.users.create(connection=args.connection, email=weak, password="123")
        raise Mismatch("a weak password was accepted")
    except BadRequestError as e:
        check(e.status_code == 400, f"status {e.status_code}")
        body = auth0_error_body(e, 400)
        step("users.create weak password", f"400 {body['errorCode']}: {body['message']}")
    check(mgmt.users.list_users_by_email(email=weak) == [], "the refused user exists")

    # Delete a User, then it is gone: the SDK raises NotFoundError.
    check(mgmt.users.delete(user_id) is None, "delete returned a body")
    step("users.delete", user_id)
    try:
        mgmt.users.get(user_id)
        raise Mismatch("the deleted user is still there")
    except NotFoundError as e:
        check(e.status_code == 404, f"status {e.status_code}")
        body = auth0_error_body(e, 404)
        step("users.get deleted", f"404 {body['errorCode']}")


def main():
    args = options()
    try:
        run(args)
    except Mismatch as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    except Auth0Error as e:
        # The Authentication API refused the token request.
        print(f"FAIL token endpoint {e.status_code}: {e.error_code}: {e.message}", file=sys.stderr)
        return 1
    except ApiError as e:
        # An answer the SDK raised on where a step expected success.
        print(f"FAIL unexpected {type(e).__name__} {e.status_code}: {e.body}", file=sys.stderr)
        return 1
    print("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
