"""The service's routes, one module per resource, each router with its own path prefix.

``ROUTERS`` is the one place that assembles them: ``create_app`` includes these in
this order (the order of the OpenAPI page). A module that adds a sub-resource to
another resource's path (``POST /v1/tickets/{id}/return`` lives with the returns) does
so through a second router with that resource's prefix.
"""

from __future__ import annotations

from fastapi import APIRouter

from serving.routes import (
    admin,
    campaigns,
    console,
    customers,
    labeling,
    messages,
    models,
    products,
    returns,
    reviews,
    stats,
    surveys,
    templates,
    tickets,
    unsubscribe,
)

ROUTERS: tuple[APIRouter, ...] = (
    messages.router,
    messages.classify_router,
    tickets.queue_router,
    tickets.router,
    tickets.labels_router,
    reviews.router,
    customers.router,
    stats.router,
    admin.router,
    admin.config_router,
    models.router,
    labeling.router,
    templates.router,
    templates.ticket_router,
    campaigns.orders_router,
    campaigns.customer_router,
    campaigns.router,
    products.router,
    surveys.router,
    unsubscribe.router,
    console.root_router,
    console.router,
    returns.ticket_router,
    returns.router,
    returns.stats_router,
)
