"""The gateway's web console: a local page to watch and commission the building, served
by the gateway process (see ``docs/console.md``)."""
