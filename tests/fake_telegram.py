"""A fake Telegram Bot API on loopback: records sendMessage calls; can be down or rate-limit."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "123456:TEST-telegram-token"
CHAT_ID = "-1001234567"


class FakeTelegram:
    def __init__(self):
        self.sent: list[dict] = []
        self.updates: list[dict] = []  # what getUpdates hands out (offset confirms, as Telegram's does)
        self.mode = "ok"  # "ok", "down" (500), "rate-limited" (429 with retry_after)
        self.retry_after = 7
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit

                url = urlsplit(self.path)
                if url.path != f"/bot{TOKEN}/getUpdates":
                    return self._answer(404, {"ok": False, "description": "Not Found"})
                offset = int(parse_qs(url.query).get("offset", ["0"])[0])
                fake.updates = [u for u in fake.updates if u["update_id"] >= offset]
                return self._answer(200, {"ok": True, "result": list(fake.updates)})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != f"/bot{TOKEN}/sendMessage":
                    return self._answer(404, {"ok": False, "description": "Not Found"})
                if fake.mode == "down":
                    return self._answer(502, {"ok": False, "description": "Bad Gateway"})
                if fake.mode == "rate-limited":
                    return self._answer(429, {"ok": False, "description": "Too Many Requests",
                                              "parameters": {"retry_after": fake.retry_after}})
                fake.sent.append(body)
                return self._answer(200, {"ok": True, "result": {"message_id": len(fake.sent)}})

            def _answer(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def message(self, text: str, chat_id=CHAT_ID, user_id=42, username="trader", chat_type="private"):
        """A message someone sends the bot."""
        update_id = 1000 + len(self.updates) + len(self.sent)
        self.updates.append({"update_id": update_id, "message": {
            "message_id": update_id, "text": text, "chat": {"id": int(chat_id), "type": chat_type},
            "from": {"id": user_id, "username": username}}})

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
