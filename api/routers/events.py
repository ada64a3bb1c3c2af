"""Server-sent events: limit changes and alert changes as they happen."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import CurrentPrincipal
from api.live import LiveHub
from api.problems import ApiProblem, responses

router = APIRouter(tags=["live"])

HEARTBEAT_S = 15.0


@router.get("/events", responses={**responses(401, 503), 200: {
    "description": "an endless `text/event-stream`: `event: limit` and `event: alert`, each with "
                   "a JSON `data` line naming the facility",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    response_class=StreamingResponse)
async def events(request: Request, principal: CurrentPrincipal) -> StreamingResponse:
    """Limit and alert changes of every facility the caller may see, as server-sent events.
    Browsers read it with `fetch` so that the Authorization header goes along."""
    hub: LiveHub | None = request.app.state.hub
    if hub is None:
        raise ApiProblem(503, "live updates are switched off in this process")
    sub = hub.subscribe(principal.scope)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while True:
                try:
                    event, data = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": heartbeat\n\n"
                    continue
                yield f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
