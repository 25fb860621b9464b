"""What Apache (mod_ssl, gridsite) does in front of panda-server, for a server on 127.0.0.1.

The real server routes on SCRIPT_NAME and takes the caller's identity from SSL_CLIENT_S_DN and
GRST_CRED_* variables. Here the identity comes from the request itself, the same way the server's
own OIDC path derives it: the bearer token's ``name`` (+ ``preferred_username``) becomes the DN
(the signature is not checked: this server runs with ``token_authType = None``), and an Origin
with a role (``atlas:production``) becomes the VOMS FQAN ``/atlas/Role=production``. A request
without a token is PanDA's own service talking to itself (JEDI activates jobs through the server's
API): it gets the service DN with the production role, as a host certificate would.
"""

from pandaserver.server.panda import application as panda_application

from airflow_provider_panda.auth import claims as token_claims

SERVICE_DN = "/DC=ch/DC=cern/OU=computers/CN=pandaserver/127.0.0.1"


def _claims(authorization):
    """The bearer token's claims, decoded as the provider does (no signature check)."""
    parts = authorization.split()
    return token_claims(parts[1]) if len(parts) == 2 else None


def application(environ, start_response):
    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    environ["PATH_INFO"] = ""
    claims = _claims(environ.get("HTTP_AUTHORIZATION", ""))
    if not environ.get("HTTP_AUTHORIZATION"):
        environ["SSL_CLIENT_S_DN"] = SERVICE_DN
        environ["GRST_CRED_AUTH_TOKEN_0"] = "VOMS /atlas/Role=production"
    elif claims and claims.get("name"):
        dn = " ".join(t[:1].upper() + t[1:].lower() for t in str(claims["name"]).split())
        if claims.get("preferred_username"):
            dn += f"/CN=nickname:{claims['preferred_username']}"
        environ["SSL_CLIENT_S_DN"] = dn
        vo, _, role = (environ.get("HTTP_ORIGIN") or "").replace(".", ":", 1).partition(":")
        if role:
            environ["GRST_CRED_AUTH_TOKEN_0"] = f"VOMS /{vo}/Role={role}"
    return panda_application(environ, start_response)
