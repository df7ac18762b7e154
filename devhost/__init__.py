"""A small local stand-in for the Azure Functions host, for machines without Core Tools.

It loads ``function_app.py``, reads ``host.json`` and ``local.settings.json`` and runs the
functions the way the real host does: HTTP routes under the route prefix with auth levels and
function keys, Storage queue triggers (batching, visibility timeout, poison queue, message
encoding) and NCRONTAB timers. It knows only the Functions programming model, not Mailbridge.
It is a development tool: production runs on the real Functions host. See docs/devhost.md.
"""
