"""What the gateway shows people and machines about the suite: the API catalogue at ``/`` and
the docs page at ``/docs`` (every API with its explorer, and a form to get a token)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse


@dataclass(frozen=True)
class ApiEntry:
    name: str
    base_path: str
    title: str


def suite_apis() -> list[ApiEntry]:
    """Every API the suite serves, titled as its document titles it."""
    from services.app import APIS
    from services.tmf.spec import load_document

    return [ApiEntry(d.name, d.base_path, str(load_document(d.document, with_hub=False).get("info", {}).get(
        "title", d.name))) for d in APIS]


def catalogue(apis: Sequence[ApiEntry], public_url: str) -> JSONResponse:
    return JSONResponse({
        "name": "tmf-sqm",
        "docs": f"{public_url}/docs",
        "tokenEndpoint": f"{public_url}/oauth2/token",
        "authorizationServerMetadata": f"{public_url}/.well-known/oauth-authorization-server",
        "apis": [{"name": a.name, "title": a.title, "basePath": a.base_path,
                  "url": f"{public_url}{a.base_path}", "document": f"{public_url}{a.base_path}/openapi.json",
                  "explorer": f"{public_url}{a.base_path}/ui/"} for a in apis],
    })


TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path, not a secret
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tmf-sqm APIs</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; background: #fff; line-height: 1.5; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #ccc; }}
a {{ color: #0b4f9c; }}
label {{ display: block; margin-top: .6rem; font-weight: 600; }}
input {{ font: inherit; padding: .3rem; width: 100%; max-width: 28rem; }}
button {{ font: inherit; margin-top: .8rem; padding: .4rem 1rem; }}
pre {{ background: #f3f3f3; padding: .6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }}
:focus {{ outline: 3px solid #0b4f9c; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>tmf-sqm APIs</h1>
<p>Every call needs a bearer token. Get one below with your client credentials, then use it in
an explorer's <em>Authorize</em> dialog or with curl.</p>
<table>
<caption>APIs served behind this gateway</caption>
<thead><tr><th scope="col">API</th><th scope="col">Base path</th><th scope="col">Explorer</th>
<th scope="col">Document</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<h2>Get a token</h2>
<form id="login">
<label for="client-id">Client id</label>
<input id="client-id" name="client_id" autocomplete="username" required>
<label for="client-secret">Client secret</label>
<input id="client-secret" name="client_secret" type="password" autocomplete="current-password" required>
<button type="submit">Get token</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<pre id="token" hidden></pre>
</main>
<script>
document.getElementById("login").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const form = new FormData(event.target);
  const body = new URLSearchParams({{grant_type: "client_credentials",
    client_id: form.get("client_id"), client_secret: form.get("client_secret")}});
  const status = document.getElementById("status");
  const out = document.getElementById("token");
  const answer = await fetch("{token_path}", {{method: "POST", body}});
  const data = await answer.json();
  if (!answer.ok) {{
    status.textContent = "Refused: " + (data.error_description || data.error);
    out.hidden = true;
    return;
  }}
  sessionStorage.setItem("sqm-token", data.access_token);
  status.textContent = "Token valid for " + data.expires_in + " s (scopes: " + data.scope + ").";
  out.textContent = "curl -H 'Authorization: Bearer " + data.access_token + "' {first_api}";
  out.hidden = false;
}});
</script>
</body>
</html>
"""


def docs_page(request: Request, apis: Sequence[ApiEntry], public_url: str) -> HTMLResponse:
    rows = "\n".join(
        f'<tr><td>{escape(a.title)}</td><td><code>{escape(a.base_path)}</code></td>'
        f'<td><a href="{escape(a.base_path)}/ui/">explore {escape(a.name)}</a></td>'
        f'<td><a href="{escape(a.base_path)}/openapi.json">openapi.json</a></td></tr>'
        for a in apis)
    first = f"{public_url}{apis[0].base_path}" if apis else public_url
    html = _PAGE.format(rows=rows, token_path=TOKEN_PATH, first_api=escape(first))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
