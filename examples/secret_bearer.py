"""Modal's custom-bearer example: a named Secret holds AUTH_TOKEN; FastAPI checks the header.
It also shows the client's IP, for access control.

    rayweb secret create my-web-auth-token AUTH_TOKEN=choose-a-long-random-string
    rayweb serve examples/secret_bearer.py
    curl -H "Authorization: Bearer choose-a-long-random-string" http://127.0.0.1:8000/auth-example-f-dev
"""

import os

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import rayweb

app = rayweb.App("auth-example")
auth_scheme = HTTPBearer()


@app.function(secrets=[rayweb.Secret.from_name("my-web-auth-token", required_keys=["AUTH_TOKEN"])])
@rayweb.fastapi_endpoint()
async def f(request: Request, token: HTTPAuthorizationCredentials = Depends(auth_scheme)):
    if token.credentials != os.environ["AUTH_TOKEN"]:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return {"message": "success!", "client": request.client.host if request.client else None}
