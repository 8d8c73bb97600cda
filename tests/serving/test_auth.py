"""Roles and keys through HTTP, on SQLite and PostgreSQL: every route checks its role;
keys are hashed, shown once, revocable and never logged."""

from __future__ import annotations

from tests.serving.factories import error_of

ROUTE_ROLES = {
    "/v1/messages": "service",
    "/v1/messages/email": "service",
    "/v1/classify": "service",
    "/v1/queues": "agent",
    "/v1/queues/{queue}/tickets": "agent",
    "/v1/queues/{queue}/claim": "agent",
    "/v1/tickets": "agent",
    "/v1/tickets/{ticket_id}": "agent",
    "/v1/tickets/{ticket_id}/claim": "agent",
    "/v1/tickets/{ticket_id}/draft/send": "agent",
    "/v1/tickets/{ticket_id}/return": "agent",
    "/v1/returns": "agent",
    "/v1/returns/{return_id}": "agent",
    "/v1/returns/{return_id}/state": "agent",
    "/v1/stats/returns": "agent",
    "/v1/tickets/{ticket_id}/attachments/{attachment_id}": "agent",
    "/v1/tickets/{ticket_id}/release": "agent",
    "/v1/tickets/{ticket_id}/reply": "agent",
    "/v1/tickets/{ticket_id}/resolve": "agent",
    "/v1/tickets/{ticket_id}/no-response-needed": "agent",
    "/v1/tickets/{ticket_id}/labels": "agent",
    "/v1/labels/export": "agent",
    "/v1/reviews": "agent",
    "/v1/reviews/{review_id}/handled": "agent",
    "/v1/customers/{customer_id}": "agent",
    "/v1/stats/agents": "agent",
    "/v1/stats/kpis": "agent",
    "/v1/stats/signals": "agent",
    "/v1/products/insights": "agent",
    "/v1/products/{product_id}/insights": "agent",
    "/v1/keys": "admin",
    "/v1/keys/{key_id}": "admin",
    "/v1/config": "admin",
    "/v1/models": "admin",
    "/v1/models/{version}": "admin",
    "/v1/models/{version}/promote": "admin",
    "/v1/models/rollback": "admin",
    "/v1/models/retrain": "admin",
    "/v1/models/jobs": "admin",
    "/v1/models/jobs/{job_id}": "admin",
    "/v1/labeling/next": "agent",
    "/v1/templates": "admin",
    "/v1/templates/{template_name}": "admin",
    "/v1/tickets/{ticket_id}/suggested-replies": "agent",
    "/v1/orders": "service",
    "/v1/customers/{customer_id}/consent": "service",
    "/v1/customers/{customer_id}/opt-out": "agent",
    "/v1/campaigns": "admin",
    "/v1/campaigns/{campaign_id}": "admin",
    "/v1/campaigns/{campaign_id}/runs": "admin",
    "/v1/campaigns/{campaign_id}/runs/{run_id}": "admin",
    "/v1/campaigns/{campaign_id}/runs/{run_id}/export": "admin",
}


def test_every_route_checks_its_role(desk):
    keys = {"service": desk.service.api_key, "agent": desk.agent.api_key}
    paths = {p: ops for p, ops in desk.app.openapi()["paths"].items() if p.startswith("/v1/")}
    assert set(paths) == set(ROUTE_ROLES), "declare the role of every new route"
    for route_path, ops in paths.items():
        path = route_path.format(
            queue="general",
            ticket_id=1,
            attachment_id=1,
            return_id=1,
            review_id=1,
            key_id=1,
            customer_id="c",
            product_id="p",
            template_name="t",
            campaign_id=1,
            run_id=1,
            version="v0001",
            job_id="j",
        )
        for method in (m.upper() for m in ops):
            r = desk.http.request(method, path)
            assert r.status_code == 401, (method, path, r.status_code)
            r = desk.http.request(method, path, headers={"X-API-Key": "clk_wrong"})
            assert r.status_code == 401, (method, path)
            for role, key in keys.items():
                if role == ROUTE_ROLES[route_path]:
                    continue
                r = desk.http.request(method, path, headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 403, (method, path, role, r.status_code)
                assert "needs a key with role" in r.json()["detail"]


def test_keys_are_hashed_shown_once_revocable_and_never_logged(desk, caplog):
    from serving.store import ApiKey

    caplog.set_level("DEBUG")
    created = desk.admin.create_key("carol", "agent")
    key = created["key"]
    carol = desk.admin.with_key(key)
    assert carol.queues()
    with desk.sessions() as s:
        stored = [row.key_hash for row in s.query(ApiKey)]
    assert key not in stored and all(len(h) == 64 for h in stored)
    assert all("key" not in k for k in desk.admin.list_keys())
    desk.admin.revoke_key(created["id"])
    assert error_of(carol.queues).status_code == 401
    assert key not in caplog.text
