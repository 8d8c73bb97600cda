"""The typed Python client of the carelens HTTP API (httpx only).

    from carelens_client import CarelensClient
    with CarelensClient("http://127.0.0.1:8000", api_key="clk_...") as cl:
        stored = cl.post_message(channel="review", text="Arrived broken", product_id="B0X")
        ticket = cl.claim("reviews")

Answers are JSON dicts typed by ``carelens_client.types`` (generated from the service's
OpenAPI schema); any non-2xx answer raises ``CarelensError``."""

from carelens_client.client import CarelensClient, CarelensError
from carelens_client.vocabulary import CHANNELS, Channel

__all__ = ["CHANNELS", "CarelensClient", "CarelensError", "Channel"]
