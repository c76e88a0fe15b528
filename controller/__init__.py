"""controller: the gateway runtime (CLI entry point for now; the asyncio controller
comes with the runtime issue)."""
