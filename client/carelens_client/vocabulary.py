"""Names the store, the API and the typed client share, declared once. No dependencies
(the client imports it without the server's packages)."""

from __future__ import annotations

from typing import Literal, get_args

# where a message came from
Channel = Literal["email", "review", "chat", "social"]
CHANNELS: tuple[str, ...] = get_args(Channel)
