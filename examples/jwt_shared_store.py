"""A script on the JWT bearer flow with a shared token store: ``python examples/jwt_shared_store.py``

Settings come from the environment, as in production:

    SF_CLIENT_ID          the connected app's consumer key
    SF_USERNAME           the integration user
    SF_PRIVATE_KEY_FILE   the private key whose certificate is on the connected app
    SF_LOGIN_URL          optional: https://test.salesforce.com for a sandbox, or your My Domain
    AUTHKIT_STORAGE_URL   optional: where the token is shared (default sqlite:///authkit.db)

Run it twice, or from ten cron jobs at once: only the first run logs in; every later run
(every process, on every host that shares the store) reuses the stored token until Salesforce
ends the session, and then exactly one of them logs in again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from authkit import open_storage
from authkit.salesforce import JwtAuth, SalesforceClient

# Check the settings before anything is opened: a missing one is a message, not a
# traceback, and leaves no authkit.db behind in the current directory.
missing = [name for name in ("SF_CLIENT_ID", "SF_USERNAME", "SF_PRIVATE_KEY_FILE") if not os.environ.get(name)]
if missing:
    sys.exit(f"jwt_shared_store.py: set {', '.join(missing)} (see the top of this file); "
             "to try authkit without a Salesforce org, run examples/quickstart.py")
key_file = Path(os.environ["SF_PRIVATE_KEY_FILE"])
if not key_file.is_file():
    sys.exit(f"jwt_shared_store.py: SF_PRIVATE_KEY_FILE: no such file: {key_file}")

store = open_storage(os.environ.get("AUTHKIT_STORAGE_URL", "sqlite:///authkit.db"))
auth = JwtAuth(
    client_id=os.environ["SF_CLIENT_ID"],
    username=os.environ["SF_USERNAME"],
    private_key=key_file.read_text(),
    login_url=os.environ.get("SF_LOGIN_URL", "https://login.salesforce.com"),
    token_store=store,
)
with store, SalesforceClient(auth) as sf:
    for account in sf.query("SELECT Id, Name FROM Account ORDER BY Name LIMIT 5"):
        print(account["Id"], account["Name"])
    usage = sf.api_usage  # from the Sforce-Limit-Info header of the last response
    if usage is not None:
        print(f"API usage today: {usage.used} of {usage.limit}")
