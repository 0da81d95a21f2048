"""The shortest path through both modes: an authority, a proxy in front."""
from lp import Fixture, Pki, Server, verify_token, token_payload, key_id


def test_authority_then_proxy():
    with Fixture() as fx:
        pki = fx.add(Pki())
        auth = fx.add(Server(pki, "authority"))
        key = auth.create_key(products="api,engine")
        auth.start()
        r = auth.license(key)
        assert r.status == 200, r
        body = r.json()
        assert body["source"] == "authority"
        assert body["key_id"] == key_id(key)
        assert verify_token(body["lease"], pki.pub)
        assert token_payload(body["lease"])["prd"] == ["api", "engine"]
        proxy_key = auth.create_key(name="proxy", role="proxy")
        proxy = fx.add(Server(pki, "proxy", extra={"license": {
            "server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub]}},
            env={"LICPROXY_LICENSE_KEY": proxy_key}))
        proxy.start()
        r = proxy.license(key)
        assert r.status == 200, r
        assert r.json()["source"] == "upstream"
        r = proxy.license(key)
        assert r.json()["source"] == "cache", r
        assert proxy.status_json()["state"] == "Connected"
        assert proxy.stop() == 0
        assert auth.stop() == 0
