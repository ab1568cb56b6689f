"""OAuth login to Shoonya: print the login URL, take the auth code, store the session that
every worker and the watcher then use. The token is never printed."""

from urllib.parse import parse_qs, urlsplit

from django.core.management.base import BaseCommand, CommandError

from brokers import shoonya_session as sessions


def code_from(text: str) -> str:
    """The auth code, given as is or inside the URL the login page redirected to."""
    text = text.strip()
    if "code=" in text:
        found = parse_qs(urlsplit(text).query).get("code") or parse_qs(text).get("code")
        if found:
            return found[0]
    return text


class Command(BaseCommand):
    help = "Log in to Shoonya with OAuth (SHOONYA_CLIENT_ID, SHOONYA_SECRET, SHOONYA_USER_ID) and store the session."

    def add_arguments(self, parser):
        parser.add_argument("code", nargs="?",
                            help="the auth code (or the redirect URL holding it); asked for if absent")

    def handle(self, *args, code=None, **options):
        if not sessions.oauth_configured():
            raise CommandError("set SHOONYA_USER_ID, SHOONYA_CLIENT_ID and SHOONYA_SECRET first")
        if not code:
            self.stdout.write("Open this URL, log in, and copy the auth code it gives you:\n")
            self.stdout.write(f"  {sessions.oauth_login_url()}\n")
            try:
                code = input("auth code (or the whole redirect URL): ")
            except EOFError:
                raise CommandError("no auth code given") from None
        try:
            session = sessions.gen_acs_tok(sessions.new_client(), code_from(code))
        except sessions.LoginFailed as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(
            f"Shoonya OAuth session stored for {session.user_id}; workers and the watcher use it now."))
