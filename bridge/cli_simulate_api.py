"""``pbx-bridge simulate <vendor>-api``: a vendor's command API on loopback, for the bridge's
``[sources.api]`` (or ``[sources.provisioning]``) to talk to.

Each listens on the port the embedded default config's source expects and, where the vendor
places calls, pushes the call's events back to that source's ingest URL, so a newcomer's
``pbx-bridge call`` closes the loop with no config at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from bridge import config
from bridge.simulate.api_common import ApiServer

AddCommand = Callable[..., argparse.ArgumentParser]

# vendor -> (default listen, the source it pushes to, summary)
_APIS = {
    "coocenter": ("127.0.0.1:8091", "coocenter", "Zycoo CooCenter's /coocenter-api/..."),
    "coral": ("127.0.0.1:8092", "coral", "Coral IRIS IVDX's api/v3"),
    "oncall": ("127.0.0.1:8093", "oncall", "OnCall / PortSIP's REST API"),
    "callog": ("127.0.0.1:8094", None, "the cloud IVR's settings/handler.ashx"),
    "ccm": ("127.0.0.1:8095", None, "a Call Control Manager's api.aspx (provisioning)"),
}


def add_parsers(vendors: Any, command: AddCommand, base_url: str) -> None:
    for vendor, (listen, source, summary) in _APIS.items():
        parser = command(
            vendors,
            f"{vendor}-api",
            f"serve {summary} for commands",
            f"A simulated {summary}: it answers the commands the bridge sends a source's PBX "
            "(with the vendor's own answers and failures: a wrong key, an unknown extension, a "
            "busy one)"
            + (
                ", and pushes a placed call's events back to the bridge as the PBX would."
                if source
                else "."
            )
            + " It prints the config table that points a source at it; the embedded default "
            "config's sources already do. Loopback only.",
            f"pbx-bridge simulate {vendor}-api",
            f"pbx-bridge simulate {vendor}-api --listen 127.0.0.1:{int(listen[-4:]) + 100}",
        )
        parser.add_argument(
            "--listen", default=listen, metavar="HOST:PORT", help="HOST:PORT (loopback)"
        )
        if source:
            parser.add_argument(
                "--push-url",
                default=f"{base_url}/ingest/{source}",
                help="where placed calls' pushes go (the source's ingest URL)",
            )
            parser.add_argument(
                "--no-push", action="store_true", help="answer commands, push nothing back"
            )
        defaults = config.SIMULATED_APIS.get(vendor, {})
        if vendor == "coral":
            parser.add_argument("--api-key", default=defaults["api_key"], help="the api-key")
        elif vendor == "oncall":
            parser.add_argument("--username", default=defaults["username"], help="tenant user")
            parser.add_argument(
                "--password",
                default=defaults["password"],
                help="its password (default: the embedded default config's)",
            )
        elif vendor == "coocenter":
            parser.add_argument("--webkey", help="the API page's WEBKEY (default: none)")
            parser.add_argument("--push-webkey", help="the WEBKEY its pushes carry")
            parser.add_argument("--timezone", default="UTC", help="the PBX's zone")
        elif vendor == "callog":
            parser.add_argument("--api-key", default=defaults["api_key"], help="the apikey")
            parser.add_argument("--customer-id", default=defaults["customer_id"], help="the custid")
        else:
            parser.add_argument(
                "--security-key",
                default=config.SIMULATED_PROVISIONING["security_key"],
                help="qsSecuritykey",
            )


def server_of(args: argparse.Namespace) -> ApiServer:
    """The simulator a ``simulate <vendor>-api`` command line asks for."""
    vendor = args.vendor.removesuffix("-api")
    host, port = config.split_listen(args.listen, "--listen")
    push = None if getattr(args, "no_push", True) else args.push_url
    if vendor == "coral":
        from bridge.simulate.coral_api import CoralApi

        return CoralApi(host=host, port=port, api_key=args.api_key, push_url=push)
    if vendor == "oncall":
        from bridge.simulate.oncall_api import OnCallApi

        return OnCallApi(
            host=host, port=port, username=args.username, password=args.password, push_url=push
        )
    if vendor == "coocenter":
        from bridge.simulate.coocenter_api import CoocenterApi

        return CoocenterApi(
            host=host,
            port=port,
            webkey=args.webkey,
            push_url=push,
            push_webkey=args.push_webkey,
            timezone=args.timezone,
        )
    if vendor == "callog":
        from bridge.simulate.callog_api import CallogApi

        return CallogApi(host=host, port=port, api_key=args.api_key, customer_id=args.customer_id)
    from bridge.simulate.ccm_api import CcmApi

    return CcmApi(host=host, port=port, security_key=args.security_key)


def run(args: argparse.Namespace) -> int:
    server = server_of(args)
    snippet: Callable[[], str] = getattr(server, "snippet")  # noqa: B009
    vendor = args.vendor.removesuffix("-api")

    async def serve() -> None:
        banner = f"simulated {vendor} API on {{url}} (Ctrl-C stops it); a source reaches it with:\n"
        async with server:
            print(banner.format(url=server.url) + snippet(), file=sys.stdout, flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0
